"""The miniature task's tokenizer and tiny Qwen2 model builder."""

import pytest

from trl_grrm.formats.gqm import build_gqm_prompt
from trl_grrm.mini.judge_data import build_ranking_dataset
from trl_grrm.mini.models import build_mini_model, build_mini_tokenizer, template_spans
from trl_grrm.mini.task import SOURCE_LANGUAGE, SOURCE_WORDS, TARGET_LANGUAGE, TARGET_WORDS


@pytest.fixture(scope="module")
def tokenizer():
    return build_mini_tokenizer()


@pytest.fixture(scope="module")
def group_prompt():
    group = build_ranking_dataset(1, seed=2, group_sizes=(4,))[0]
    return build_gqm_prompt(group["src_text"], group["mt_texts"], group["src_lang"], group["trg_lang"]), group


def test_gqm_prompt_round_trips_with_every_word_one_token(tokenizer, group_prompt):
    prompt, group = group_prompt
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == prompt
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
    # Hand count: 1 fused header, one token per source word, 4 fused candidate headers, one token per candidate word,
    # 1 fused closing fence.
    words = len(group["src_text"].split()) + sum(len(text.split()) for text in group["mt_texts"])
    assert len(ids) == 1 + 4 + 1 + words


def test_every_lexicon_word_is_one_token_after_a_space(tokenizer):
    for word in [*SOURCE_WORDS, *TARGET_WORDS]:
        assert len(tokenizer(f" {word}", add_special_tokens=False)["input_ids"]) == 1, word


def test_template_spans_are_the_fixed_text_of_the_grrm_prompt():
    prompt = build_gqm_prompt("@src@", ["a", "b"], SOURCE_LANGUAGE, TARGET_LANGUAGE)
    header, rest = prompt.split("@src@")
    assert header in template_spans()
    assert header.endswith("on a scale from 0 to 10.\n\nSource text:\n```\n")
    assert rest == "\n```\n\nTranslation A:\n```\na\n```\nTranslation B:\n```\nb\n```\n"
    for span in ("\n```\n\nTranslation A:\n```\n", "\n```\nTranslation B:\n```\n", "\n```\n"):
        assert span in template_spans()


def test_without_fused_template_the_prompt_still_round_trips_but_is_longer(tokenizer, group_prompt):
    prompt, _ = group_prompt
    plain = build_mini_tokenizer(fuse_template=False)
    plain_ids = plain(prompt, add_special_tokens=False)["input_ids"]
    assert plain.decode(plain_ids) == prompt
    assert len(plain_ids) > len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 40


def test_built_model_loads_offline_with_transformers(tmp_path, group_prompt):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_mini_model(tmp_path / "judge", size="xs")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert model.config.head_dim == 64  # vLLM's CPU attention rejects smaller heads
    assert model.config.vocab_size == len(tokenizer)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": group_prompt[0]}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3 or tokenizer.eos_token_id in out[0].tolist()


def test_unknown_model_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        build_mini_model(tmp_path, size="huge")

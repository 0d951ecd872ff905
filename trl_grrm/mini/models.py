"""Tokenizer and tiny Qwen2 models for the miniature task, built offline in seconds.

The tokenizer is a byte-level BPE (so any text round-trips, and nothing is ever unknown) trained on the task's own
prompts and answers, so every Aklan and Berun word is one token. On top, the fixed spans of the GRRM judge template
(the instruction sentence, ``Translation B:`` with its fences, ``### Final Ranking:``...) are added as single tokens.
The judge prompt stays byte for byte the GRRM template; only its token count shrinks, from about 70 template
tokens per group to about 6, which is what lets a 1M-parameter judge read a 4-candidate group in ~70 tokens.

The model folder (tokenizer + :class:`~transformers.Qwen2ForCausalLM`, head_dim 64 for vLLM's CPU kernels) loads by
path in TRL, transformers and vLLM with no hub access.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..formats.gqm import CANDIDATE_IDS, build_gqm_prompt, format_gqm_answer
from ..formats.mt import build_mt_prompt
from ..formats.sqm import build_sqm_prompt
from ..testing.tiny_models import build_tiny_qwen2_model, train_chat_tokenizer
from .judge_data import build_ranking_dataset, build_sqm_sft_dataset
from .task import SOURCE_LANGUAGE, TARGET_LANGUAGE

MT_PROMPT_STYLE = "tower"
"""The policy's prompt in the miniature task: the translation alone, as the answer. (A code-block answer would start
with a fence that the fused ``"\n```\n"`` template token merges with the chat template's newline, so the policy would
learn to leave the fence out.)"""

MAX_GROUP_SIZE = 4
"""Largest group whose candidate blocks get fused template tokens (GRRM groups hold 2-4)."""

MODEL_SIZES: dict[str, dict[str, int]] = {
    "xs": {"hidden_size": 128, "num_layers": 2, "intermediate_size": 256},
    "s": {"hidden_size": 128, "num_layers": 4, "intermediate_size": 512},
    "m": {"hidden_size": 256, "num_layers": 4, "intermediate_size": 1024},
}
"""Named model sizes: ``xs`` ~0.3M, ``s`` ~1.1M (the probe's size), ``m`` ~3.4M parameters."""

_HOLE = "\x00"


def template_spans(source_language: str = SOURCE_LANGUAGE, target_language: str = TARGET_LANGUAGE) -> list[str]:
    """The fixed text between the variable parts of the GQM and SQM prompts, of the GQM answer and of the policy's
    MT prompt.

    Found by building the real prompts around placeholders, so they follow :mod:`trl_grrm.formats` exactly.

    Example:
        >>> spans = template_spans()
        >>> "\\n```\\nTranslation B:\\n```\\n" in spans, "\\n\\n### Scores:\\n\\n" in spans
        (True, True)
    """
    texts = [
        build_gqm_prompt(_HOLE, [_HOLE] * MAX_GROUP_SIZE, source_language, target_language),
        build_sqm_prompt(_HOLE, _HOLE, source_language, target_language),
        build_mt_prompt(_HOLE, source_language, target_language, style=MT_PROMPT_STYLE),
        # The ranking and scores lines vary; keep the headers around them only.
        format_gqm_answer(_HOLE, {"A": 0, "B": 0}).replace("A = B", _HOLE).replace("A: 0, B: 0", _HOLE),
    ]
    spans: list[str] = []
    for text in texts:
        for span in text.split(_HOLE):
            if span.strip() and span not in spans:
                spans.append(span)
    return spans


def _corpus(seed: int) -> list[str]:
    ranking = build_ranking_dataset(400, seed=seed + 10_000)
    lines: list[str] = []
    for row in ranking:
        lines.append(build_gqm_prompt(row["src_text"], row["mt_texts"], row["src_lang"], row["trg_lang"]))
        lines.append(row["analysis"])
        lines.append(build_mt_prompt(row["src_text"], row["src_lang"], row["trg_lang"], style=MT_PROMPT_STYLE))
        lines.append(row["mt_texts"][0])
    for row in build_sqm_sft_dataset(ranking.select(range(50))):
        lines.extend(message["content"] for message in row["messages"])
    lines.append(" ".join(str(n) for n in range(11)))
    lines.append(" ".join(f"{a}: {n}," for a in CANDIDATE_IDS[:MAX_GROUP_SIZE] for n in range(11)))
    lines.append(" > ".join(CANDIDATE_IDS[:MAX_GROUP_SIZE]) + " = ".join(CANDIDATE_IDS[:MAX_GROUP_SIZE]))
    lines.extend(["user\n", "assistant\n", "system\n"] * 10)
    random.Random(seed).shuffle(lines)
    return lines


def build_mini_tokenizer(vocab_size: int = 1000, fuse_template: bool = True, seed: int = 0):
    """A ChatML byte-level BPE tokenizer for the miniature task (a :class:`~transformers.PreTrainedTokenizerFast`).

    ``fuse_template`` adds the fixed GRRM template spans (:func:`template_spans`) as single tokens.

    Example:
        >>> tokenizer = build_mini_tokenizer()
        >>> tokenizer.tokenize(" taluen")
        ['Ġtaluen']
    """
    # Longest match wins among added tokens, so a whole candidate header beats the bare closing fence it contains.
    spans = template_spans() if fuse_template else []
    return train_chat_tokenizer(_corpus(seed), vocab_size, model_max_length=1024, added_tokens=spans)


def build_mini_model(
    output_dir: str | Path,
    size: str = "s",
    seed: int = 0,
    vocab_size: int = 1000,
    fuse_template: bool = True,
) -> Path:
    """Write the miniature tokenizer and a randomly initialised Qwen2 model of a named size into ``output_dir``.

    Example:
        >>> path = build_mini_model("/tmp/mini_judge", size="s")  # doctest: +SKIP
        >>> SFTTrainer(model=str(path), ...)  # doctest: +SKIP
    """
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(MODEL_SIZES)}")
    tokenizer = build_mini_tokenizer(vocab_size=vocab_size, fuse_template=fuse_template, seed=seed)
    build_tiny_qwen2_model(tokenizer, output_dir, seed=seed, max_position_embeddings=1024, **MODEL_SIZES[size])
    return Path(output_dir)

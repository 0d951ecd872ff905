"""Judge engine for OpenAI-compatible servers (``vllm serve`` first of all), with several base URLs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
from collections.abc import Sequence
from typing import Any

from .base import JudgeEngine, JudgeOutput, Messages, SamplingSettings

logger = logging.getLogger(__name__)

_TOO_LONG_MARKERS = ("maximum context length", "too long", "max_model_len", "context length", "longer than")


def run_coroutine(coroutine: Any) -> Any:
    """Run a coroutine to completion from sync code, also when the caller's thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class OpenAIEngine(JudgeEngine):
    """Send judge prompts as concurrent chat-completion requests to one or more OpenAI-compatible servers.

    Requests are spread round-robin over ``base_urls``; a failed request is retried with exponential backoff on the
    next URL. Connection errors, timeouts, 429 and 5xx are retried; a 400 that reports an over-long prompt becomes
    ``error="prompt_too_long"``; anything else that persists becomes ``error="unavailable"``. The API key is read
    from the environment variable ``api_key_env`` and never logged.

    Example:
        >>> engine = OpenAIEngine("judge", ["http://judge-1:8000/v1", "http://judge-2:8000/v1"])  # doctest: +SKIP
        >>> engine.generate([[{"role": "user", "content": prompt}]], SamplingSettings())  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        base_urls: str | Sequence[str],
        api_key_env: str = "JUDGE_API_KEY",
        max_concurrency: int = 64,
        timeout: float = 600.0,
        max_retries: int = 3,
        backoff_seconds: float = 1.0,
        tokenizer: str | None = None,
        max_prompt_tokens: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.base_urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not self.base_urls:
            raise ValueError("OpenAIEngine needs at least one base URL")
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_prompt_tokens = max_prompt_tokens
        self.extra_body = extra_body or {}
        self._tokenizer_name = tokenizer
        self._tokenizer = None

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIEngine(model={self.model!r}, base_urls={self.base_urls!r})"

    def count_prompt_tokens(self, prompts: list[Messages]) -> list[int] | None:
        if self._tokenizer_name is None:
            return None
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_name)
        return [
            len(self._tokenizer.apply_chat_template(m, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
            for m in prompts
        ]

    def generate(self, prompts: list[Messages], sampling: SamplingSettings) -> list[JudgeOutput]:
        return run_coroutine(self._generate_all(prompts, sampling))

    async def _generate_all(self, prompts: list[Messages], sampling: SamplingSettings) -> list[JudgeOutput]:
        import openai

        api_key = os.environ.get(self.api_key_env) or "EMPTY"
        # Our own retry loop moves to the next URL; the client's built-in retries would stay on a dead one.
        clients = [
            openai.AsyncOpenAI(base_url=url, api_key=api_key, timeout=self.timeout, max_retries=0)
            for url in self.base_urls
        ]
        semaphore = asyncio.Semaphore(self.max_concurrency)
        try:
            return list(
                await asyncio.gather(
                    *(self._generate_one(clients, i, m, sampling, semaphore) for i, m in enumerate(prompts))
                )
            )
        finally:
            await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)

    async def _generate_one(
        self, clients: list, index: int, messages: Messages, sampling: SamplingSettings, semaphore: asyncio.Semaphore
    ) -> JudgeOutput:
        import openai

        last_error = ""
        for attempt in range(self.max_retries + 1):
            client = clients[(index + attempt) % len(clients)]
            try:
                async with semaphore:
                    response = await client.chat.completions.create(
                        model=self.model,
                        messages=messages,
                        temperature=sampling.temperature,
                        top_p=sampling.top_p,
                        max_tokens=sampling.max_tokens,
                        seed=None if sampling.seed is None else sampling.seed + index,
                        extra_body=self.extra_body or None,
                    )
                usage = response.usage
                return JudgeOutput(
                    text=response.choices[0].message.content or "",
                    prompt_tokens=usage.prompt_tokens if usage else 0,
                    completion_tokens=usage.completion_tokens if usage else 0,
                )
            except openai.BadRequestError as error:
                message = str(error)
                if any(marker in message.lower() for marker in _TOO_LONG_MARKERS):
                    return JudgeOutput(text=None, error="prompt_too_long", detail=message[:500])
                return JudgeOutput(text=None, error="unavailable", detail=f"bad request: {message[:500]}")
            except (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
                    openai.InternalServerError, openai.APIStatusError) as error:
                last_error = f"{type(error).__name__}: {str(error)[:300]} ({client.base_url})"
                if attempt < self.max_retries:
                    delay = self.backoff_seconds * 2**attempt * (1 + random.random() / 2)
                    logger.warning("Judge request failed (%s); retry %d in %.1fs", last_error, attempt + 1, delay)
                    await asyncio.sleep(delay)
        return JudgeOutput(text=None, error="unavailable", detail=last_error)

"""Judge engine for OpenAI-compatible servers (``vllm serve`` first of all), with several base URLs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .base import (
    PROMPT_TOO_LONG,
    TRUNCATED,
    UNAVAILABLE,
    JudgeConfigurationError,
    JudgeEngine,
    JudgeOutput,
    Messages,
    SamplingSettings,
    check_verdict_tokens,
)

logger = logging.getLogger(__name__)

_TOO_LONG_MARKERS = ("maximum context length", "too long", "max_model_len", "context length", "longer than")
# Statuses no retry can fix: unknown model or route, rejected key, a request the server refuses (other than one whose
# prompt is too long, which is a per-prompt outcome).
_CONFIGURATION_STATUSES = (400, 401, 403, 404, 422)
REDACTED = "[redacted]"


def redact_secret(text: str, secret: str | None, min_piece: int = 8) -> str:
    """``text`` without ``secret`` and without any piece of it ``min_piece`` characters or longer.

    Some gateways repeat the API key in their error text, whole or shortened ("Incorrect API key provided: sk-...");
    every text the engine builds from a server's answer passes through here before it is logged, returned or raised.

    Example:
        >>> redact_secret("Incorrect API key provided: sk-abcdefghijkl.", "sk-abcdefghijkl")
        'Incorrect API key provided: [redacted].'
        >>> redact_secret("key sk-abcdefgh... rejected", "sk-abcdefghijkl")
        'key [redacted]... rejected'
    """
    if not secret:
        return text
    if len(secret) < min_piece:
        return text.replace(secret, REDACTED)
    # Mark every character inside a window of `min_piece` characters that also occurs in the secret, then replace
    # each marked run with one marker: linear in the text, also for long keys (tokens of a thousand characters).
    pieces = {secret[i : i + min_piece] for i in range(len(secret) - min_piece + 1)}
    marked = [False] * len(text)
    for start in range(len(text) - min_piece + 1):
        if text[start : start + min_piece] in pieces:
            marked[start : start + min_piece] = [True] * min_piece
    runs = itertools.groupby(zip(text, marked), key=lambda pair: pair[1])
    return "".join(REDACTED if secret_run else "".join(c for c, _ in run) for secret_run, run in runs)


def run_coroutine(coroutine: Any) -> Any:
    """Run a coroutine to completion from sync code, also when the caller's thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


@dataclass(frozen=True)
class _AttemptFailure:
    """One request attempt that failed in a way a retry may fix. ``kind`` groups failures in the retry summary."""

    kind: str  # "503", "timeout", "connection error", "malformed reply"
    detail: str
    url: str

    def describe(self) -> str:
        return f"{self.kind} from {self.url}: {self.detail}"


@dataclass(frozen=True)
class _Request:
    """What one engine call asks of the server for every prompt, and how a chat completion becomes an output.

    ``arguments(index)``: the ``chat.completions.create`` arguments besides model, messages and extra_body.
    ``finish(output, choice, url)``: the output of a well-formed reply, completed from the reply's ``choice``.
    """

    arguments: Callable[[int], dict[str, Any]]
    finish: Callable[[JudgeOutput, dict[str, Any], str], JudgeOutput | _AttemptFailure]


def _summarise(failures: Sequence[_AttemptFailure]) -> str:
    """E.g. ``(503 x10, timeout x2) at http://judge:8000/v1``; the URLs get counts when there are several."""
    kinds = ", ".join(f"{kind} x{count}" for kind, count in Counter(f.kind for f in failures).most_common())
    urls = Counter(f.url for f in failures).most_common()
    where = urls[0][0] if len(urls) == 1 else ", ".join(f"{url} x{count}" for url, count in urls)
    return f"({kinds}) at {where}"


class OpenAIEngine(JudgeEngine):
    """Send judge prompts as concurrent chat-completion requests to one or more OpenAI-compatible servers.

    Requests are spread round-robin over ``base_urls``. They are sent in rounds: all prompts at once, then, after an
    exponential backoff, the failed ones again, each on the next URL, up to ``max_retries`` times, with one summary
    warning per round. Retried: connection errors, timeouts, 429, 5xx, and 200 replies that are not a chat completion
    (invalid JSON, an HTML page, no choices, no message). ``timeout`` is a hard deadline for each attempt, however
    slowly the server sends, so a call with up to ``max_concurrency`` prompts takes at most
    ``(max_retries + 1) * timeout`` plus the backoff.

    Per prompt: a 400 that reports an over-long prompt gives ``error="prompt_too_long"``, an answer cut by
    ``max_tokens`` (``finish_reason="length"``) gives ``error="truncated"``, and failures that outlast the retries
    give ``error="unavailable"``; ``request_retries`` counts the retries each prompt took. An unknown model (404),
    a rejected key (401, 403) or any other refused request (400, 422) raises :class:`JudgeConfigurationError` at
    once, naming the URL and the model (and, for a 404, the models the server offers).

    The API key is read from the environment variable ``api_key_env``. It is removed from every log line, detail and
    exception the engine writes, also when a server repeats it in its error text.

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
        self._api_key: str | None = None

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
        def arguments(index: int) -> dict[str, Any]:
            return dict(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=None if sampling.seed is None else sampling.seed + index,
            )

        def finish(output: JudgeOutput, choice: dict[str, Any], url: str) -> JudgeOutput:
            if output.finish_reason == "length":
                return replace(output, error=TRUNCATED, detail=f"answer cut at max_tokens={sampling.max_tokens}")
            return output

        return run_coroutine(self._run_all(prompts, _Request(arguments, finish)))

    def verdict_logprobs(
        self, prompts: list[Messages], verdict_tokens: Sequence[str], top_k: int = 20
    ) -> list[JudgeOutput]:
        """One greedy token per prompt with ``logprobs`` and ``top_logprobs=top_k``, read at the verdict tokens.

        The server's token strings are matched exactly (``"A"`` is not ``" A"``). A verdict token outside the top-k
        is absent from ``verdict_logprobs``; ``verdict_logprob_floor`` is the smallest log-probability returned.
        OpenAI allows ``top_k`` up to 20, as does ``vllm serve`` unless started with a larger ``--max-logprobs``;
        a larger value is refused with a 400, raised as :class:`JudgeConfigurationError`, as is a server that
        answers without log-probabilities.

        Example:
            >>> engine.verdict_logprobs([[{"role": "user", "content": gram_prompt}]], ("A", "B"))  # doctest: +SKIP
            [JudgeOutput(text='A', ..., verdict_logprobs={'A': -0.05, 'B': -3.02}, verdict_logprob_floor=-9.8)]
        """
        check_verdict_tokens(verdict_tokens)

        def arguments(index: int) -> dict[str, Any]:
            return dict(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=top_k)

        def finish(output: JudgeOutput, choice: dict[str, Any], url: str) -> JudgeOutput | _AttemptFailure:
            logprobs = choice.get("logprobs")
            if logprobs is None:
                raise JudgeConfigurationError(self._redact(
                    f"The judge server at {url} answered model {self.model!r} without log-probabilities; "
                    "verdict log-probabilities need a server that supports logprobs and top_logprobs."
                ))
            content = logprobs.get("content") if isinstance(logprobs, dict) else None
            first = content[0] if isinstance(content, list) and content else None
            top = first.get("top_logprobs") if isinstance(first, dict) else None
            try:
                returned: dict[str, float] = {}
                for entry in [first, *top]:
                    returned.setdefault(entry["token"], float(entry["logprob"]))  # the first spelling wins
            except (TypeError, KeyError, ValueError):
                return _AttemptFailure(
                    "malformed reply", self._redact(f"unreadable logprobs of the first token: {first!r:.200}"), url
                )
            return replace(
                output,
                verdict_logprobs={token: returned[token] for token in verdict_tokens if token in returned},
                verdict_logprob_floor=min(returned.values()),
            )

        return run_coroutine(self._run_all(prompts, _Request(arguments, finish)))

    def _redact(self, text: str) -> str:
        return redact_secret(text, self._api_key)

    async def _run_all(self, prompts: list[Messages], request: _Request) -> list[JudgeOutput]:
        import openai

        self._api_key = os.environ.get(self.api_key_env)
        # Our own retry loop moves to the next URL; the client's built-in retries would stay on a dead one.
        clients = [
            openai.AsyncOpenAI(base_url=url, api_key=self._api_key or "EMPTY", timeout=self.timeout, max_retries=0)
            for url in self.base_urls
        ]
        semaphore = asyncio.Semaphore(self.max_concurrency)
        outputs: list[JudgeOutput | None] = [None] * len(prompts)
        pending = list(range(len(prompts)))
        try:
            for attempt in range(self.max_retries + 1):
                results = await self._send_round(clients, attempt, pending, prompts, request, semaphore)
                failures: dict[int, _AttemptFailure] = {}
                for index, result in zip(pending, results):
                    if isinstance(result, _AttemptFailure):
                        failures[index] = result
                    else:
                        outputs[index] = replace(result, request_retries=attempt)
                if not failures:
                    break
                summary = _summarise(list(failures.values()))
                if attempt < self.max_retries:
                    delay = self.backoff_seconds * 2**attempt * (1 + random.random() / 2)
                    logger.warning(
                        "%d of %d judge requests failed %s; retry %d of %d in ~%.1fs",
                        len(failures), len(pending), summary, attempt + 1, self.max_retries, delay,
                    )
                    await asyncio.sleep(delay)
                    pending = list(failures)
                else:
                    last_error = next(iter(failures.values())).describe()
                    logger.warning(
                        "%d of %d judge requests failed after %d retries %s; no judge answer for them. Last error: %s",
                        len(failures), len(prompts), self.max_retries, summary, last_error,
                    )
                    for index, failure in failures.items():
                        outputs[index] = JudgeOutput(
                            text=None, error=UNAVAILABLE, detail=failure.describe(), request_retries=attempt
                        )
        finally:
            await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
            self._api_key = None  # held only while a call runs, so the engine never carries it elsewhere
        return outputs  # type: ignore[return-value]

    async def _send_round(
        self, clients: list, attempt: int, pending: list[int], prompts: list[Messages], request: _Request,
        semaphore: asyncio.Semaphore,
    ) -> list[JudgeOutput | _AttemptFailure]:
        """One attempt for every pending prompt, concurrently; a configuration error cancels the rest and raises."""
        tasks = [
            asyncio.ensure_future(
                self._attempt(clients[(index + attempt) % len(clients)], index, prompts[index], request, semaphore)
            )
            for index in pending
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _attempt(
        self, client: Any, index: int, messages: Messages, request: _Request, semaphore: asyncio.Semaphore
    ) -> JudgeOutput | _AttemptFailure:
        import openai

        url = str(client.base_url).rstrip("/")
        async with semaphore:
            try:
                # A deadline for the whole attempt: the client's own timeout bounds each read, so a server that
                # trickles bytes would hold the attempt for as long as it likes.
                raw = await asyncio.wait_for(
                    client.chat.completions.with_raw_response.create(
                        model=self.model,
                        messages=messages,
                        extra_body=self.extra_body or None,
                        **request.arguments(index),
                    ),
                    timeout=self.timeout,
                )
            except (asyncio.TimeoutError, openai.APITimeoutError):
                return _AttemptFailure("timeout", f"no complete reply within {self.timeout:g}s", url)
            except openai.APIConnectionError as error:
                return _AttemptFailure("connection error", self._redact(f"{error} ({error.__cause__!r})"), url)
            except openai.APIStatusError as error:
                message = self._redact(_server_message(error))
                if error.status_code == 400 and any(marker in message.lower() for marker in _TOO_LONG_MARKERS):
                    return JudgeOutput(text=None, error=PROMPT_TOO_LONG, detail=message)
                if error.status_code in _CONFIGURATION_STATUSES:
                    raise await self._configuration_error(client, url, error.status_code, message) from None
                return _AttemptFailure(str(error.status_code), message, url)
        return self._read_reply(raw.text, url, request)

    def _read_reply(self, text: str, url: str, request: _Request) -> JudgeOutput | _AttemptFailure:
        """The judge output in a 200 reply, or a retryable failure when the body is not a chat completion."""

        def malformed(problem: str) -> _AttemptFailure:
            return _AttemptFailure("malformed reply", self._redact(f"{problem}: {text[:200]!r}"), url)

        try:
            body = json.loads(text)
        except ValueError:
            return malformed("reply is not JSON")
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not choices:
            return malformed("reply has no choices")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            return malformed("reply's choice has no message")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            return malformed("reply's message content is not text")
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        finish_reason = choice.get("finish_reason")
        output = JudgeOutput(
            text=content or "",
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        )
        return request.finish(output, choice, url)

    async def _configuration_error(self, client: Any, url: str, status: int, message: str) -> JudgeConfigurationError:
        reason = message.rstrip(".")
        text = f"The judge server at {url} refused the request for model {self.model!r} with {status}: {reason}."
        if status == 404:
            text += " " + await self._served_models(client, url)
        elif status in (401, 403):
            state = "set" if self._api_key else "not set"
            text += f" Check the API key in the environment variable {self.api_key_env} ({state})."
        else:
            text += " Retrying cannot help; check the sampling settings and extra_body sent with each request."
        return JudgeConfigurationError(self._redact(text))

    async def _served_models(self, client: Any, url: str) -> str:
        """Which models the server offers, for the message of a 404 (a hint: if listing fails, that is reported)."""
        import openai

        try:
            page = await asyncio.wait_for(client.models.list(), timeout=self.timeout)
            names = [model.id for model in page.data]
        except openai.APIStatusError as error:
            problem = f"{error.status_code} {_server_message(error)}"
        except (asyncio.TimeoutError, openai.APIError, ValueError, TypeError, AttributeError) as error:
            problem = f"{type(error).__name__}: {error}"
        else:
            return f"It serves: {', '.join(names)}." if names else "It serves no models."
        return f"The base URL may be wrong: listing its models (GET {url}/models) failed too: {problem}."


def _server_message(error: Any) -> str:
    """The error text a server put in its reply (vLLM, OpenAI and most gateways use ``message`` or ``detail``)."""
    body = error.body
    if isinstance(body, dict):
        text = body.get("message") or body.get("detail")
        return text[:500] if isinstance(text, str) else json.dumps(body)[:500]
    return str(body)[:500] if body else error.message

"""The small interface every judge engine implements: chat prompts in, texts and token counts out."""

from __future__ import annotations

import abc
from dataclasses import dataclass

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingSettings:
    """How the judge samples. ``temperature=0`` is greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 4096
    seed: int | None = None


class JudgeConfigurationError(RuntimeError):
    """The judge cannot answer as configured (unknown model name, rejected API key, a request the server refuses).

    Engines raise it on the first call instead of retrying, since no retry can help; the message names the engine's
    URL and model and never contains the API key.
    """


#: Values of :attr:`JudgeOutput.error`.
PROMPT_TOO_LONG = "prompt_too_long"
UNAVAILABLE = "unavailable"
TRUNCATED = "truncated"


@dataclass
class JudgeOutput:
    """One judge answer, or why there is none.

    ``error`` is ``None`` on success; ``"prompt_too_long"`` when the prompt does not fit the judge's context;
    ``"unavailable"`` when the engine could not answer (server down, timeout or malformed replies after retries);
    ``"truncated"`` when the answer hit the token limit (``text`` then holds the cut answer, which is not a judgment).
    ``finish_reason`` is the engine's own (``"stop"``, ``"length"``, ...) when it reports one; ``request_retries``
    counts the transport-level retries spent on this prompt (HTTP errors, timeouts), not re-asks of bad answers.
    """

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    detail: str | None = None
    finish_reason: str | None = None
    request_retries: int = 0


class JudgeEngine(abc.ABC):
    """Generates judge answers for a batch of chat prompts in one call.

    Implementations must process the whole batch together (one batched generate, or concurrent requests) and
    return one :class:`JudgeOutput` per prompt, in order, never raising for a single bad prompt.
    """

    #: Longest prompt, in judge tokens, the engine accepts (``None`` if unknown, e.g. a remote server).
    max_prompt_tokens: int | None = None

    @abc.abstractmethod
    def generate(self, prompts: list[Messages], sampling: SamplingSettings) -> list[JudgeOutput]:
        """Answer every prompt."""

    def count_prompt_tokens(self, prompts: list[Messages]) -> list[int] | None:
        """Prompt lengths in judge tokens after the chat template, or ``None`` when the engine cannot tell."""
        return None

    def close(self) -> None:
        """Release engine resources (processes, connections)."""

"""The small interface every judge engine implements: chat prompts in, texts and token counts out."""

from __future__ import annotations

import abc
from collections.abc import Sequence
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
    #: From :meth:`JudgeEngine.verdict_logprobs` only: the log-probability of each requested verdict token as the
    #: first answer token; a token the engine did not return (outside its top-k) is absent, not guessed.
    verdict_logprobs: dict[str, float] | None = None
    #: With :attr:`verdict_logprobs` from an engine that returns only its top-k: the smallest log-probability it
    #: returned, an upper bound for any verdict token that is absent. ``None`` when every verdict token is returned.
    verdict_logprob_floor: float | None = None


def check_verdict_tokens(verdict_tokens: Sequence[str]) -> None:
    """Raise :class:`JudgeConfigurationError` unless there are verdict tokens and no two are the same."""
    if isinstance(verdict_tokens, str) or not verdict_tokens or len(set(verdict_tokens)) != len(verdict_tokens):
        raise JudgeConfigurationError(f"verdict tokens must be distinct strings, got {verdict_tokens!r}")


def verdict_token_ids(tokenizer, verdict_tokens: Sequence[str], model: str) -> list[int]:
    """The judge tokenizer's id for each verdict token; each must be exactly one token, as the judge's first answer
    token is compared across them.

    Raises :class:`JudgeConfigurationError` naming the token, how it splits and the model, or for duplicates.
    """
    check_verdict_tokens(verdict_tokens)
    ids = []
    for token in verdict_tokens:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) != 1:
            pieces = tokenizer.convert_ids_to_tokens(encoded)
            raise JudgeConfigurationError(
                f"verdict token {token!r} is not a single token for the judge {model!r}: it splits into {pieces}; "
                "choose verdict tokens that are single tokens in the judge's vocabulary"
            )
        ids.append(encoded[0])
    return ids


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

    def verdict_logprobs(
        self, prompts: list[Messages], verdict_tokens: Sequence[str], top_k: int = 20
    ) -> list[JudgeOutput]:
        """For each prompt, the log-probabilities of ``verdict_tokens`` (e.g. ``("A", "B")``) as the first token of
        the answer, in :attr:`JudgeOutput.verdict_logprobs` (no text is generated).

        Pairwise judges that read their verdict from token probabilities (GRAM) use this. Same batching and error
        contract as :meth:`generate`. Engines that cannot do it raise ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot return verdict-token log-probabilities")

    def close(self) -> None:
        """Release engine resources (processes, connections)."""

"""The judge-format protocol: what a judge asks about a group, how it reads one answer, how answers become scores.

A judge is a *format* (this protocol) + an *engine* (:mod:`trl_grrm.engines`) + a *retry policy*
(:class:`~trl_grrm.judging.RetryPolicy`); :class:`~trl_grrm.judging.JudgeRunner` puts them together. A format is
pure: it builds chat prompts from strings and reads answers back, with no I/O, no batching and no retries.

A new judge format is one class with three methods:

* ``prompts(group, candidates)``: the chat prompts one group needs, with the candidates in the order they are shown
  (one prompt for a group-wise judge such as GQM, one per candidate for a pointwise judge such as SQM, one per pair
  for a pairwise judge);
* ``parse(output, prompt_index, num_candidates)``: one engine answer (the whole
  :class:`~trl_grrm.engines.JudgeOutput`: ``text`` for generated answers, ``verdict_logprobs`` for formats that ask
  for verdict-token log-probabilities) into something JSON-serialisable, kept in the audit record; raise
  :class:`JudgeAnswerError` (any ``ValueError``) when it is not a judgment, and the runner asks again;
* ``combine(parsed, num_candidates)``: the parsed answers of all of the group's prompts, in prompt order, into one
  score per shown candidate (higher = better).

``output_kind = "verdict_logprobs"`` (with ``verdict_tokens``) makes the runner call
:meth:`~trl_grrm.engines.JudgeEngine.verdict_logprobs` instead of ``generate``.

Example, a custom rubric judge (one prompt per candidate, a 1-5 grade on the last line):

    >>> class RubricJudge(JudgeFormat):
    ...     name = "rubric"
    ...     def prompts(self, group, candidates):
    ...         return [[{"role": "user", "content": f"Grade 1-5 how well this answers {group.source_text!r}:\\n{c}"}]
    ...                 for c in candidates]
    ...     def parse(self, output, prompt_index, num_candidates):
    ...         grade = int((output.text or "").strip().splitlines()[-1])  # ValueError: asked again
    ...         if not 1 <= grade <= 5:
    ...             raise JudgeAnswerError(f"grade {grade} is not in 1-5")
    ...         return grade
    ...     def combine(self, parsed, num_candidates):
    ...         return [float(grade) for grade in parsed]
    >>> from trl_grrm.testing.scripted_engine import ScriptedEngine
    >>> from trl_grrm.judging import rank
    >>> engine = ScriptedEngine(lambda prompt, attempt, sampling: "4" if "Paris" in prompt else "2")
    >>> rank(RubricJudge(), engine, "Capital of France?", ["Lyon", "Paris"])[0].winner
    1
"""

from __future__ import annotations

import abc
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..engines.base import JudgeOutput, Messages


class JudgeAnswerError(ValueError):
    """A judge answer that is not a judgment (it does not parse, or it breaks the format's rules)."""


@dataclass(frozen=True)
class JudgeGroup:
    """What a judge is asked about: a source (an MT source text, or a chat prompt) and its candidates.

    ``key`` is the caller's handle (a row index, a prompt id); the core passes it through untouched. Formats read
    ``source_text``, ``source_language``, ``target_language`` and ``reference``; any object with these attributes
    (e.g. :class:`trl_grrm.evaluation.ranking.RankingGroup`) can stand in for a ``JudgeGroup``.
    """

    source_text: str
    candidates: Sequence[str]
    source_language: str | None = None
    target_language: str | None = None
    reference: str | None = None
    key: Any = None


class JudgeFormat(abc.ABC):
    """How one kind of judge is asked about a group and how its answers become per-candidate scores.

    See the module docstring for the protocol and an example. Formats see candidates in the order they are shown;
    the runner permutes them and maps the scores back to the group's own order.
    """

    name: str = "judge"
    #: Largest group one call can take (``None``: no limit). Callers skip (eval) or refuse (rewards) larger groups.
    max_candidates: int | None = None
    #: ``"text"``: the engine generates answers; ``"verdict_logprobs"``: the engine returns the log-probabilities of
    #: ``verdict_tokens`` as the answer's first token (deterministic, so such answers are never asked again).
    output_kind: Literal["text", "verdict_logprobs"] = "text"
    verdict_tokens: tuple[str, ...] = ()
    #: How many top log-probabilities the engine is asked for when looking for the verdict tokens.
    verdict_top_k: int = 20
    #: ``True``: ``combine`` also gets groups where some prompts got no judgment (``None`` in their place) and raises
    #: :class:`JudgeAnswerError` when the rest is not enough; ``False``: any failed prompt leaves the group unjudged.
    partial_results: bool = False

    @abc.abstractmethod
    def prompts(self, group: Any, candidates: Sequence[str]) -> list[Messages]:
        """Chat prompts for the group with its candidates in the given (shown) order."""

    @abc.abstractmethod
    def parse(self, output: JudgeOutput, prompt_index: int, num_candidates: int) -> Any:
        """Read the answer to prompt ``prompt_index``; raise :class:`JudgeAnswerError` when it is not a judgment."""

    @abc.abstractmethod
    def combine(self, parsed: list[Any], num_candidates: int) -> list[float]:
        """One score per shown candidate from the parsed answers of every prompt, in prompt order."""

    def describe(self) -> dict[str, Any]:
        """Settings written to evaluation outputs."""
        return {"name": self.name}


def distinct_candidates(candidates: Sequence[str | None]) -> tuple[list[str], list[int | None]]:
    """The distinct candidates (the same text up to Unicode normalisation and whitespace counts once, first spelling
    kept) and, per input candidate, its index among them (``None`` for a ``None`` candidate, e.g. a failed
    extraction). Judging each distinct text once keeps identical completions on identical scores.

    Example:
        >>> distinct_candidates(["Hallo  Welt", None, "Hallo Welt", "Servus"])
        (['Hallo  Welt', 'Servus'], [0, None, 0, 1])
    """
    distinct: list[str] = []
    seen: dict[str, int] = {}
    members: list[int | None] = []
    for candidate in candidates:
        if candidate is None:
            members.append(None)
            continue
        key = " ".join(unicodedata.normalize("NFC", candidate).split())
        if key not in seen:
            seen[key] = len(distinct)
            distinct.append(candidate)
        members.append(seen[key])
    return distinct, members

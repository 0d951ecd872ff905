"""The MT judge formats shipped with the package, as :class:`~trl_grrm.judging.JudgeFormat` implementations.

* :class:`GQMJudge`: the GRRM group-wise format, one prompt per group, a 0-10 score for every candidate;
* :class:`SQMJudge`: the GRRM paper's pointwise baseline, one prompt per candidate, 0-10;
* :class:`GembaSQMJudge`: a GEMBA-SQM-style reference-based judge, one prompt per candidate, 0-100.

The prompt texts and parsers are the pure functions of :mod:`trl_grrm.formats`; these classes only say how a group
maps onto them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..engines.base import JudgeOutput, Messages
from ..formats.gemba_sqm import GembaSQMParseError, build_gemba_sqm_prompt, parse_gemba_sqm_output
from ..formats.gqm import CANDIDATE_IDS, GQMParseError, build_gqm_prompt, parse_gqm_output
from ..formats.sqm import SQMParseError, build_sqm_prompt, parse_sqm_output
from .protocol import JudgeAnswerError, JudgeFormat


def _user(content: str) -> Messages:
    return [{"role": "user", "content": content}]


class GQMJudge(JudgeFormat):
    """This package's GRRM judge format: one prompt per group, scores for every candidate in one answer.

    ``parse`` returns ``{"scores": [...], "ranking_agrees": bool | None, "revised_scores": bool}`` (scores in shown
    order). ``ranking_mismatch="fail"`` treats an answer whose ranking line contradicts its scores as unparsable; by
    default the scores are used and the disagreement is only recorded (``ranking_agrees``).

    Example:
        >>> from trl_grrm.engines import JudgeOutput
        >>> GQMJudge().parse(JudgeOutput(text="### Scores:\\nA: 3, B: 9"), 0, 2)["scores"]
        [3, 9]
    """

    name = "gqm"
    max_candidates = len(CANDIDATE_IDS)

    def __init__(self, ranking_mismatch: str = "count", language_names: Mapping[str, str] | None = None) -> None:
        if ranking_mismatch not in ("count", "fail"):
            raise ValueError(f"ranking_mismatch must be 'count' or 'fail', got {ranking_mismatch!r}")
        self.ranking_mismatch = ranking_mismatch
        self.language_names = dict(language_names) if language_names else None

    def prompts(self, group: Any, candidates: Sequence[str]) -> list[Messages]:
        return [_user(build_gqm_prompt(
            group.source_text, list(candidates), group.source_language, group.target_language,
            language_names=self.language_names,
        ))]  # fmt: skip

    def parse(self, output: JudgeOutput, prompt_index: int, num_candidates: int) -> dict[str, Any]:
        ids = list(CANDIDATE_IDS[:num_candidates])
        try:
            judgment = parse_gqm_output(output.text or "", ids)
        except GQMParseError as error:
            raise JudgeAnswerError(str(error)) from None
        if self.ranking_mismatch == "fail" and judgment.ranking_agrees is False:
            raise JudgeAnswerError("ranking line disagrees with the scores")
        return {
            "scores": judgment.ordered_scores(ids),
            "ranking_agrees": judgment.ranking_agrees,
            "revised_scores": judgment.revised_scores,
        }

    def combine(self, parsed: list[Any], num_candidates: int) -> list[float]:
        return list(parsed[0]["scores"])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "ranking_mismatch": self.ranking_mismatch}


class SQMJudge(JudgeFormat):
    """A pointwise judge: one prompt per candidate (:func:`trl_grrm.formats.sqm.build_sqm_prompt`), 0-10 each.

    The prompt is the GRRM paper's SQM-GenRM baseline prompt. The candidate order cannot matter to it.
    """

    name = "sqm"

    def __init__(self, language_names: Mapping[str, str] | None = None) -> None:
        self.language_names = dict(language_names) if language_names else None

    def prompts(self, group: Any, candidates: Sequence[str]) -> list[Messages]:
        return [
            _user(build_sqm_prompt(group.source_text, candidate, group.source_language, group.target_language,
                                   language_names=self.language_names))
            for candidate in candidates
        ]  # fmt: skip

    def parse(self, output: JudgeOutput, prompt_index: int, num_candidates: int) -> int:
        try:
            return parse_sqm_output(output.text or "")
        except SQMParseError as error:
            raise JudgeAnswerError(str(error)) from None

    def combine(self, parsed: list[Any], num_candidates: int) -> list[float]:
        return [float(score) for score in parsed]


class GembaSQMJudge(JudgeFormat):
    """A GEMBA-SQM-style judge: each candidate scored 0-100 against the group's ``reference``
    (:func:`trl_grrm.formats.gemba_sqm.build_gemba_sqm_prompt`), one prompt per candidate."""

    name = "gemba_sqm_ref"

    def __init__(self, language_names: Mapping[str, str] | None = None) -> None:
        self.language_names = dict(language_names) if language_names else None

    def prompts(self, group: Any, candidates: Sequence[str]) -> list[Messages]:
        if getattr(group, "reference", None) is None:
            raise ValueError(f"the {self.name} judge needs a reference for the group {group.source_text[:60]!r}")
        return [
            _user(build_gemba_sqm_prompt(group.source_text, candidate, group.reference, group.source_language,
                                         group.target_language, language_names=self.language_names))
            for candidate in candidates
        ]  # fmt: skip

    def parse(self, output: JudgeOutput, prompt_index: int, num_candidates: int) -> int:
        try:
            return parse_gemba_sqm_output(output.text or "")
        except GembaSQMParseError as error:
            raise JudgeAnswerError(str(error)) from None

    def combine(self, parsed: list[Any], num_candidates: int) -> list[float]:
        return [float(score) for score in parsed]


#: Judge formats by name (``eval-ranking --judge``); register more here.
JUDGE_FORMATS: dict[str, type[JudgeFormat]] = {"gqm": GQMJudge, "sqm": SQMJudge}

"""The MT judge formats shipped with the package, as :class:`~trl_grrm.judging.JudgeFormat` implementations.

* :class:`GQMJudge`: the GRRM group-wise format, one prompt per group, a 0-10 score for every candidate;
* :class:`SQMJudge`: the GRRM paper's pointwise baseline, one prompt per candidate, 0-10;
* :class:`GembaSQMJudge`: a GEMBA-SQM-style reference-based judge, one prompt per candidate, 0-100.

The prompt texts and parsers are the pure functions of :mod:`trl_grrm.formats`; these classes only say how a group
maps onto them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..comparisons import candidate_orders, fit_subgroup_scores, subgroup_schedule, subgroups_connected
from ..engines.base import JudgeOutput, Messages
from ..formats.gemba_sqm import GembaSQMParseError, build_gemba_sqm_prompt, parse_gemba_sqm_output
from ..formats.gqm import CANDIDATE_IDS, GQMParseError, build_gqm_prompt, parse_gqm_output
from ..formats.sqm import SQMParseError, build_sqm_prompt, parse_sqm_output
from .protocol import JudgeAnswerError, JudgeFormat

logger = logging.getLogger(__name__)


def _user(content: str) -> Messages:
    return [{"role": "user", "content": content}]


#: Largest group the released GRRM judge was trained on (groups of 2-4 candidates).
GQM_TRAINED_MAX_CANDIDATES = 4


class GQMJudge(JudgeFormat):
    """This package's GRRM judge format: one prompt per group, scores for every candidate in one answer; groups
    larger than ``max_candidates_per_call`` are judged in overlapping subgroups.

    ``parse`` returns ``{"scores": [...], "ranking_agrees": bool | None, "revised_scores": bool}`` (scores in the
    prompt's shown order; a subgroup's answer also carries ``"positions"``, the shown positions it scored).
    ``ranking_mismatch="fail"`` treats an answer whose ranking line contradicts its scores as unparsable; by default
    the scores are used and the disagreement is only recorded (``ranking_agrees``).

    Groups of any size: GRRM was trained on groups of 2-4. A group of more than ``max_candidates_per_call`` (default
    4) distinct candidates is judged in the overlapping subgroups of
    :func:`~trl_grrm.comparisons.subgroup_schedule` (connected; every candidate in at least ``subgroup_coverage``
    subgroups, default 2; each candidate's shown positions balanced), one GQM prompt per subgroup with its members
    relabelled A, B, ...; :func:`~trl_grrm.comparisons.fit_subgroup_scores` then fits one Plackett-Luce strength per
    candidate and maps it back onto the 0-10 scale. Calls per group: ``ceil(subgroup_coverage * n / k)`` (8 at
    n=16, k=4, coverage 2), so they grow linearly with the group. Groups of at most ``max_candidates_per_call`` keep
    exactly one call and the judge's own integer scores. Coverage 2 is the least that keeps the group connected
    (one appearance each splits it into unrelated calls); 3 costs 50% more calls and averages out more judge noise.

    ``candidate_orders`` does the same for the groups judged in one prompt: each is shown whole in that many orders
    (:func:`~trl_grrm.comparisons.candidate_orders`: the given order, its reverse, then rotations), one prompt per
    order, and each candidate's score is the mean of its scores over the orders that were judged, on the judge's
    0-10 scale. With 2 (or any even number) every candidate's mean slot is the same, so a judge that prefers early
    or late slots no longer favours whoever it happens to see there. Calls per group: ``candidate_orders``.

    A subgroup whose answer never parses (after the re-asks) is dropped: the group is still judged when the judged
    subgroups cover and connect every candidate, otherwise it is unjudged with the most telling reason of the failed
    subgroups. ``ranking_agrees`` of a group is ``False`` when any judged subgroup's ranking line disagrees with its
    scores, ``None`` when none had one, else ``True``; ``revised_scores`` is ``True`` when any subgroup revised.

    ``max_candidates_per_call=None`` turns subgroups off: a group is then sent in one prompt (up to 26 candidates,
    the A-Z ids), and a warning is logged once when a group exceeds the 4 candidates GRRM was trained on.

    Example:
        >>> from trl_grrm.engines import JudgeOutput
        >>> GQMJudge().parse(JudgeOutput(text="### Scores:\\nA: 3, B: 9"), 0, 2)["scores"]
        [3, 9]
        >>> GQMJudge().schedule(8)  # two subgroups per candidate, each candidate in slots A-D at most once
        [[1, 5, 4, 3], [0, 6, 7, 2], [4, 0, 2, 5], [7, 1, 3, 6]]
        >>> GQMJudge(candidate_orders=2).schedule(3)  # a small group, shown in two orders
        [[0, 1, 2], [2, 1, 0]]
    """

    name = "gqm"
    # Failed subgroups are left out of combine() (None) as long as the rest still connect the group.
    partial_results = True

    def __init__(
        self,
        ranking_mismatch: str = "count",
        language_names: Mapping[str, str] | None = None,
        max_candidates_per_call: int | None = GQM_TRAINED_MAX_CANDIDATES,
        subgroup_coverage: int = 2,
        subgroup_seed: int = 0,
        candidate_orders: int = 1,
    ) -> None:
        if ranking_mismatch not in ("count", "fail"):
            raise ValueError(f"ranking_mismatch must be 'count' or 'fail', got {ranking_mismatch!r}")
        if max_candidates_per_call is not None and not 2 <= max_candidates_per_call <= len(CANDIDATE_IDS):
            raise ValueError(
                f"max_candidates_per_call must be in 2..{len(CANDIDATE_IDS)} or None, got {max_candidates_per_call!r}"
            )
        if not isinstance(subgroup_coverage, int) or subgroup_coverage < 2:
            raise ValueError(f"subgroup_coverage must be an integer >= 2, got {subgroup_coverage!r}")
        if not isinstance(candidate_orders, int) or isinstance(candidate_orders, bool) or candidate_orders < 1:
            raise ValueError(f"candidate_orders must be an integer >= 1, got {candidate_orders!r}")
        self.ranking_mismatch = ranking_mismatch
        self.language_names = dict(language_names) if language_names else None
        self.max_candidates_per_call = max_candidates_per_call
        self.subgroup_coverage = subgroup_coverage
        self.subgroup_seed = subgroup_seed
        self.candidate_orders = candidate_orders
        # With subgroups any group size works; without, the A-Z ids are the limit.
        self.max_candidates = None if max_candidates_per_call is not None else len(CANDIDATE_IDS)
        self._schedules: dict[int, list[list[int]]] = {}
        self._warned_untrained_size = False

    def schedule(self, num_candidates: int) -> list[list[int]]:
        """The shown positions each prompt covers, in slot order (all positions, in ``candidate_orders`` orders,
        when the group fits one call). Fixed per group size, so prompts and answers always agree."""
        if num_candidates not in self._schedules:
            k = self.max_candidates_per_call
            if k is None or num_candidates <= k:
                self._schedules[num_candidates] = candidate_orders(num_candidates, self.candidate_orders)
            else:
                self._schedules[num_candidates] = subgroup_schedule(
                    num_candidates, k, self.subgroup_coverage, self.subgroup_seed
                )
        return self._schedules[num_candidates]

    def prompts(self, group: Any, candidates: Sequence[str]) -> list[Messages]:
        if (
            self.max_candidates_per_call is None
            and len(candidates) > GQM_TRAINED_MAX_CANDIDATES
            and not self._warned_untrained_size
        ):
            self._warned_untrained_size = True
            logger.warning(
                "The GQM judge got a group of %d candidates in one prompt; GRRM was trained on groups of 2-%d. "
                "Set max_candidates_per_call (e.g. 4) to judge larger groups in overlapping subgroups.",
                len(candidates), GQM_TRAINED_MAX_CANDIDATES,
            )  # fmt: skip
        return [
            _user(build_gqm_prompt(
                group.source_text, [candidates[p] for p in positions], group.source_language, group.target_language,
                language_names=self.language_names,
            ))
            for positions in self.schedule(len(candidates))
        ]  # fmt: skip

    def parse(self, output: JudgeOutput, prompt_index: int, num_candidates: int) -> dict[str, Any]:
        schedule = self.schedule(num_candidates)
        positions = schedule[prompt_index]
        ids = list(CANDIDATE_IDS[: len(positions)])
        try:
            judgment = parse_gqm_output(output.text or "", ids)
        except GQMParseError as error:
            raise JudgeAnswerError(str(error)) from None
        if self.ranking_mismatch == "fail" and judgment.ranking_agrees is False:
            raise JudgeAnswerError("ranking line disagrees with the scores")
        parsed = {
            "scores": judgment.ordered_scores(ids),
            "ranking_agrees": judgment.ranking_agrees,
            "revised_scores": judgment.revised_scores,
        }
        if len(schedule) > 1:
            parsed["positions"] = list(positions)
        return parsed

    def combine(self, parsed: list[Any], num_candidates: int) -> list[float]:
        schedule = self.schedule(num_candidates)
        judged = [(positions, answer) for positions, answer in zip(schedule, parsed) if answer is not None]
        if len(schedule[0]) == num_candidates:  # the whole group in every prompt, in one order or several
            if not judged:
                raise JudgeAnswerError(
                    "the group's only prompt got no judgment"
                    if len(schedule) == 1
                    else f"none of the group's {len(schedule)} orders got a judgment"
                )
            if len(schedule) == 1:
                return list(parsed[0]["scores"])  # the judge's own scores, untouched
            by_position = [dict(zip(positions, answer["scores"])) for positions, answer in judged]
            return [sum(scores[p] for scores in by_position) / len(by_position) for p in range(num_candidates)]
        if not subgroups_connected(num_candidates, [positions for positions, _ in judged]):
            raise JudgeAnswerError(
                f"{len(schedule) - len(judged)} of {len(schedule)} subgroups got no judgment and the rest do not "
                f"connect all {num_candidates} candidates"
            )
        subgroups = [dict(zip(positions, answer["scores"])) for positions, answer in judged]
        return fit_subgroup_scores(num_candidates, subgroups)

    @staticmethod
    def group_flags(parsed: Sequence[Any]) -> dict[str, Any]:
        """A group's ``ranking_agrees`` and ``revised_scores`` over its judged prompts (``None``: no judgment).

        Example:
            >>> GQMJudge.group_flags([{"ranking_agrees": True, "revised_scores": False}, None,
            ...                       {"ranking_agrees": None, "revised_scores": True}])
            {'ranking_agrees': True, 'revised_scores': True}
        """
        answers = [p for p in parsed if p is not None]
        agreements = [a["ranking_agrees"] for a in answers if a["ranking_agrees"] is not None]
        return {
            "ranking_agrees": all(agreements) if agreements else None,
            "revised_scores": any(a["revised_scores"] for a in answers),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ranking_mismatch": self.ranking_mismatch,
            "max_candidates_per_call": self.max_candidates_per_call,
            "subgroup_coverage": self.subgroup_coverage,
            "candidate_orders": self.candidate_orders,
        }


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


# -- pairwise judges (GRAM, GRAM-R²) -----------------------------------------------------------------------------

PAIRWISE_SCHEMES = ("round_robin", "bradley_terry", "reference")


class _PairwiseJudge(JudgeFormat):
    """A judge that compares two responses per prompt; ``combine`` turns the pair outcomes into one score per
    candidate in [0, 1] (a mean win probability), whichever ``scheme`` chose the pairs.

    Schemes (``n`` shown candidates, each pair asked in both orders when ``both_orders``):

    * ``round_robin``: every pair (``n (n - 1) / 2``); score = mean probability of beating each other candidate;
    * ``bradley_terry``: a connected graph of about ``n log2 n`` pairs
      (:func:`~trl_grrm.comparisons.sampled_comparison_graph`, the same graph for every group of size ``n`` at a
      given ``seed``), a Bradley-Terry fit with a Gaussian prior, then
      :func:`~trl_grrm.comparisons.strengths_to_win_rates`;
    * ``reference``: each candidate against the group's ``reference`` text (``n`` pairs); without a reference text,
      against the first shown candidate, which scores 0.5 (``n - 1`` pairs).

    The pairs are a pure function of ``n`` (and of whether the group has a reference), so ``combine`` knows which
    pair each prompt was. Prompts come first in the listed order, then (``both_orders``) every pair swapped.
    """

    verdict_tokens = ("A", "B")

    def __init__(
        self, scheme: str = "round_robin", both_orders: bool = True, seed: int = 0, prior: float | None = None
    ) -> None:
        if scheme not in PAIRWISE_SCHEMES:
            raise ValueError(f"scheme must be one of {PAIRWISE_SCHEMES}, got {scheme!r}")
        self.scheme = scheme
        self.both_orders = both_orders
        self.seed = seed
        self.prior = prior

    def pairs(self, n: int, with_reference: bool = False) -> list[tuple[int, int]]:
        """The compared pairs ``(first, second)`` for ``n`` candidates; index ``n`` stands for a reference text."""
        from ..comparisons import reference_pairs, round_robin_pairs, sampled_comparison_graph

        if self.scheme == "round_robin":
            return round_robin_pairs(n)
        if self.scheme == "bradley_terry":
            return sampled_comparison_graph(n, seed=self.seed)
        return [(i, n) for i in range(n)] if with_reference else reference_pairs(n, 0)

    def _question(self, group: Any) -> str:
        return group.source_text

    def _build(self, question: str, response_a: str, response_b: str) -> str:
        raise NotImplementedError

    def prompts(self, group: Any, candidates: Sequence[str]) -> list[Messages]:
        reference = getattr(group, "reference", None) if self.scheme == "reference" else None
        texts = [*candidates, reference] if reference is not None else list(candidates)
        pairs = self.pairs(len(candidates), with_reference=reference is not None)
        shown = pairs + ([(j, i) for i, j in pairs] if self.both_orders else [])
        question = self._question(group)
        return [_user(self._build(question, texts[i], texts[j])) for i, j in shown]

    def _pair_outcomes(self, parsed: list[Any], num_pairs: int) -> list[float]:
        """P(first of the pair is better) per pair, from the parsed answers of all prompts."""
        raise NotImplementedError

    def combine(self, parsed: list[Any], num_candidates: int) -> list[float]:
        from ..comparisons import DEFAULT_PRIOR, bradley_terry_fit, strengths_to_win_rates

        n = len(parsed) // (2 if self.both_orders else 1)  # number of pairs
        with_reference = self.scheme == "reference" and n == num_candidates
        pairs = self.pairs(num_candidates, with_reference)
        if len(pairs) != n:
            raise RuntimeError(f"{len(parsed)} answers do not fit the {len(pairs)} pairs of {num_candidates} candidates")
        outcomes = self._pair_outcomes(parsed, n)
        if self.scheme == "bradley_terry":
            prior = DEFAULT_PRIOR if self.prior is None else self.prior
            strengths = bradley_terry_fit(num_candidates, [(i, j, p) for (i, j), p in zip(pairs, outcomes)], prior)
            return strengths_to_win_rates(strengths)
        wins: list[list[float]] = [[] for _ in range(num_candidates + 1)]
        for (i, j), p in zip(pairs, outcomes):
            wins[i].append(p)
            wins[j].append(1.0 - p)
        if self.scheme == "reference":
            # Only the comparisons with the reference count; a member reference does not compete with itself.
            return [0.5 if not with_reference and i == 0 else wins[i][0] for i in range(num_candidates)]
        return [sum(w) / len(w) for w in wins[:num_candidates]]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "scheme": self.scheme, "both_orders": self.both_orders, "seed": self.seed}


class GRAMJudge(_PairwiseJudge):
    """GRAM (:mod:`trl_grrm.formats.gram`): the verdict is the next-token probability of "A" vs "B", no generation.

    ``parse`` returns ``{"p_a": float, "bounded": bool}`` (``bounded``: a verdict token was outside the engine's
    top-k and was bounded by the floor, see :func:`~trl_grrm.formats.gram.read_order`); an order that carries no
    verdict (both tokens missing, or one missing without a floor) raises :class:`JudgeAnswerError`, which makes the
    group's judgment fail (a counted fallback), never a guessed winner. Both orders are averaged
    (:func:`~trl_grrm.formats.gram.gram_preference`).

    Example:
        >>> from trl_grrm.engines import JudgeOutput
        >>> judge = GRAMJudge("round_robin")
        >>> parsed = [judge.parse(JudgeOutput(None, verdict_logprobs=lp), k, 2)
        ...           for k, lp in enumerate([{"A": -0.1, "B": -2.4}, {"A": -2.4, "B": -0.1}])]
        >>> [round(s, 4) for s in judge.combine(parsed, 2)]  # candidate 0 wins in both orders
        [0.9089, 0.0911]
    """

    name = "gram"
    output_kind = "verdict_logprobs"

    def _build(self, question: str, response_a: str, response_b: str) -> str:
        from ..formats.gram import build_gram_prompt

        return build_gram_prompt(question, response_a, response_b)

    def parse(self, output: JudgeOutput, prompt_index: int, num_candidates: int) -> dict[str, Any]:
        from ..formats.gram import GRAMVerdictError, read_order

        try:
            verdict = read_order(output.verdict_logprobs, output.verdict_logprob_floor)
        except GRAMVerdictError as error:
            raise JudgeAnswerError(str(error)) from None
        return {"p_a": verdict.p_a, "bounded": verdict.bounded}

    def _pair_outcomes(self, parsed: list[Any], num_pairs: int) -> list[float]:
        from ..formats.gram import OrderVerdict, gram_preference

        outcomes = []
        for k in range(num_pairs):
            first = parsed[k]["p_a"]
            if not self.both_orders:
                outcomes.append(first)
                continue
            swapped = parsed[num_pairs + k]["p_a"]
            outcomes.append(gram_preference(OrderVerdict(first), OrderVerdict(swapped)).p_first_better)
        return outcomes


class GRAMR2Judge(_PairwiseJudge):
    """GRAM-R² (:mod:`trl_grrm.formats.gram_r2`): the judge reasons in ``<think>`` and answers ``A`` or ``B`` in
    ``<answer>``; voting@k over ``samples`` copies of every prompt (sample them: temperature > 0, no fixed seed
    shared by the copies) and over both orders.

    ``parse`` returns ``{"verdict": "A" | "B"}``; an answer without a verdict raises :class:`JudgeAnswerError`, is
    asked again per the retry policy and, if it still does not parse, fails the group (a counted fallback), never a
    win for either side.

    Example:
        >>> from trl_grrm.engines import JudgeOutput
        >>> judge = GRAMR2Judge("round_robin")
        >>> answers = ["<think>A is right</think><answer>A</answer>", "<think>B is right</think><answer>B</answer>"]
        >>> judge.combine([judge.parse(JudgeOutput(a), k, 2) for k, a in enumerate(answers)], 2)
        [1.0, 0.0]
    """

    name = "gram_r2"

    def __init__(
        self, scheme: str = "round_robin", both_orders: bool = True, seed: int = 0, prior: float | None = None,
        samples: int = 1,
    ) -> None:  # fmt: skip
        super().__init__(scheme, both_orders, seed, prior)
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.samples = samples

    def _build(self, question: str, response_a: str, response_b: str) -> str:
        from ..formats.gram_r2 import build_gram_r2_prompt

        return build_gram_r2_prompt(question, response_a, response_b)

    def prompts(self, group: Any, candidates: Sequence[str]) -> list[Messages]:
        # k samples = k copies of the prompt list, one after the other.
        return super().prompts(group, candidates) * self.samples

    def parse(self, output: JudgeOutput, prompt_index: int, num_candidates: int) -> dict[str, Any]:
        from ..formats.gram_r2 import GRAMR2ParseError, parse_gram_r2_output

        try:
            return {"verdict": parse_gram_r2_output(output.text or "").verdict}
        except GRAMR2ParseError as error:
            raise JudgeAnswerError(str(error)) from None

    def combine(self, parsed: list[Any], num_candidates: int) -> list[float]:
        per_sample = len(parsed) // self.samples
        # Regroup the k copies so that the base class sees one list of prompts; each entry keeps all k verdicts.
        merged = [[parsed[s * per_sample + k]["verdict"] for s in range(self.samples)] for k in range(per_sample)]
        return super().combine(merged, num_candidates)

    def _pair_outcomes(self, parsed: list[Any], num_pairs: int) -> list[float]:
        from ..formats.gram_r2 import vote_gram_r2

        return [
            vote_gram_r2(parsed[k], parsed[num_pairs + k] if self.both_orders else ()).p_first_better
            for k in range(num_pairs)
        ]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "samples": self.samples}


#: Judge formats by name (``eval-ranking --judge``); register more here.
JUDGE_FORMATS: dict[str, type[JudgeFormat]] = {"gqm": GQMJudge, "sqm": SQMJudge, "gram": GRAMJudge, "gram_r2": GRAMR2Judge}

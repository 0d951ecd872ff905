"""Verifiable reward for training the GRRM judge with RLVR (GRPO/GSPO on judge completions).

A judge completion is scored against the ground-truth scores of its group. A badly formed answer earns 0. A well
formed one earns::

    weight_rank   * relation agreement   (share of candidate pairs whose better / worse / tie relation is right)
  + weight_gap    * score-gap agreement  (per pair, an error of 0 / 1 / 2 in the score gap earns 1 / 0.6 / 0.2)
  + weight_anchor * anchor agreement     (share of candidates scored within ``anchor_tolerance`` of the truth)

The defaults (1, 1, 0, ties as a class of their own) give the reward of the GRRM paper, in ``[0, 2]``.

**Strictness.** Parsing goes through :func:`trl_grrm.formats.gqm.parse_gqm_output`, so cosmetic noise (blank
lines, markdown emphasis, spacing around ``>``/``=``, a trailing period, full-width punctuation, any header text)
is forgiven. What the answer *says* is held to a stricter standard than at inference, because here the judge is
being taught the format that inference relies on:

* there must be some analysis before the ranking (``min_analysis_chars``);
* the scores line must parse, name exactly the group's candidates once each, with integers in 0-10;
* by default the scores line must be the last non-empty line (``require_scores_last``), so the inference-time
  fallback "last line = scores" always works and the judge gains nothing from trailing chatter;
* by default the ranking line must be present (``require_ranking``); whether required or not, a ranking line that
  is present must parse, name exactly the group's candidates and order every pair as the scores do, ties included.

**Ties.** ``ties="class"`` (the paper's rule): a pair earns relation credit only if better / worse / tie all match,
so a strict order against a true tie is as wrong as a reversed order. ``ties="half"``: a tie against a strict order
(either way round) earns half credit, a reversed strict order still earns nothing. The half rule is gentler on a
judge whose integer scale forces near-ties; the class rule teaches it to state ties the annotator stated.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..formats.gqm import CANDIDATE_IDS, GQMJudgment, GQMParseError, parse_gqm_output
from ..formats.mt import completion_text
from ..ranking import (
    DEFAULT_GAP_ERROR_CREDIT,
    pairwise_ranking_accuracy,
    ranking_positions,
    score_gap_agreement,
)

TieMode = Literal["class", "half"]

INVALID_REASONS: tuple[str, ...] = (
    "bad_scores",
    "score_range",
    "candidate_set",
    "trailing_text",
    "missing_ranking",
    "bad_ranking",
    "inconsistent_ranking",
    "no_analysis",
)
"""Why an answer earned 0, in the order the checks run (the first failing check is reported)."""


class InvalidJudgeAnswer(ValueError):
    """A judge answer that earns no reward. ``reason`` is one of :data:`INVALID_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RankingRewardConfig:
    """Terms, weights and strictness of the judge ranking reward.

    Example:
        >>> RankingRewardConfig().max_reward
        2.0
        >>> RankingRewardConfig(weight_anchor=0.5, ties="half").max_reward
        2.5
    """

    weight_rank: float = 1.0
    weight_gap: float = 1.0
    weight_anchor: float = 0.0
    ties: TieMode = "class"
    gap_error_credit: Mapping[int, float] = field(default_factory=lambda: dict(DEFAULT_GAP_ERROR_CREDIT))
    anchor_tolerance: float = 1.0
    require_ranking: bool = True
    require_scores_last: bool = True
    min_analysis_chars: int = 1

    def __post_init__(self) -> None:
        for name in ("weight_rank", "weight_gap", "weight_anchor"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.ties not in ("class", "half"):
            raise ValueError(f"ties must be 'class' or 'half', got {self.ties!r}")
        if self.anchor_tolerance < 0:
            raise ValueError(f"anchor_tolerance must be >= 0, got {self.anchor_tolerance!r}")
        if self.min_analysis_chars < 0:
            raise ValueError(f"min_analysis_chars must be >= 0, got {self.min_analysis_chars!r}")
        bad = {k: v for k, v in self.gap_error_credit.items() if not (isinstance(k, int) and k >= 0 and 0 <= v <= 1)}
        if bad:
            raise ValueError(f"gap_error_credit maps errors (ints >= 0) to credits in [0, 1]; bad entries: {bad}")

    @property
    def max_reward(self) -> float:
        """The reward of a perfect answer."""
        return float(self.weight_rank + self.weight_gap + self.weight_anchor)


@dataclass(frozen=True)
class RankingRewardBreakdown:
    """One answer's reward and its parts. The parts are ``None`` for an invalid answer (whose reward is 0)."""

    reward: float
    valid: bool
    reason: str | None = None
    detail: str = ""
    rank: float | None = None
    gap: float | None = None
    anchor: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_ground_truth(value: str | Mapping[str, Any]) -> dict[str, float]:
    """Read a group's ground truth: a JSON string or a dict ``{"A": 8, "B": 3, ...}``.

    The ids must be the first ``n`` candidate letters (the prompt always shows ``A, B, ...``), ``n >= 2``, and the
    scores finite numbers (integral values come back as ``int``).

    Example:
        >>> parse_ground_truth('{"B": 3, "A": 8}')
        {'A': 8, 'B': 3}
    """
    truth = json.loads(value) if isinstance(value, str) else value
    if not isinstance(truth, Mapping):
        raise ValueError(f"ground truth must be a mapping of candidate id to score, got {type(truth).__name__}")
    ids = sorted(truth, key=lambda cid: (CANDIDATE_IDS.index(cid) if cid in CANDIDATE_IDS else len(CANDIDATE_IDS)))
    if len(ids) < 2 or list(ids) != list(CANDIDATE_IDS[: len(ids)]):
        raise ValueError(f"ground truth ids must be A, B, ... (at least two), got {list(truth)}")
    out: dict[str, float] = {}
    for cid in ids:
        score = truth[cid]
        # bool is an int subclass; a True/False score is a data bug, not a 1/0.
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
            raise ValueError(f"ground-truth score of {cid} must be a finite number, got {score!r}")
        out[cid] = int(score) if float(score).is_integer() else float(score)
    return out


def relation_agreement(
    predicted: Mapping[str, float], truth: Mapping[str, float], ties: TieMode = "class"
) -> float:
    """Share of candidate pairs whose relation (better / worse / tie) matches the truth; see the module doc on ties.

    Example:
        >>> pred, truth = {"A": 8, "B": 5, "C": 3}, {"A": 8, "B": 3, "C": 3}
        >>> relation_agreement(pred, truth), relation_agreement(pred, truth, ties="half")
        (0.6666666666666666, 0.8333333333333334)
    """
    if ties not in ("class", "half"):
        raise ValueError(f"ties must be 'class' or 'half', got {ties!r}")
    return pairwise_ranking_accuracy(predicted, truth, tie_credit=0.5 if ties == "half" else 0.0)


def anchor_agreement(predicted: Mapping[str, float], truth: Mapping[str, float], tolerance: float = 1.0) -> float:
    """Share of candidates whose predicted score is within ``tolerance`` of the true score.

    The relation and gap terms are shift-invariant; this is the term that pins the absolute level, which matters
    when the judge's scores are used as rewards across groups or compared with fixed penalties.

    Example:
        >>> anchor_agreement({"A": 10, "B": 5}, {"A": 8, "B": 4})
        0.5
    """
    if set(predicted) != set(truth):
        raise ValueError(f"candidate ids differ: {sorted(predicted)} vs {sorted(truth)}")
    if not truth:
        raise ValueError("need at least one candidate")
    return sum(abs(predicted[cid] - truth[cid]) <= tolerance for cid in truth) / len(truth)


def _scores_failure_reason(error: GQMParseError) -> str:
    # GQMParseError carries only a message; map the known wordings to finer reasons for logging, and fall back to
    # the generic reason so a reworded message can never turn an invalid answer valid.
    message = str(error)
    if "outside" in message:
        return "score_range"
    if "unknown candidate" in message or "no score for" in message or "scored twice" in message:
        return "candidate_set"
    return "bad_scores"


def validate_judge_answer(
    text: str,
    expected_ids: Sequence[str],
    *,
    require_ranking: bool = True,
    require_scores_last: bool = True,
    min_analysis_chars: int = 1,
) -> GQMJudgment:
    """Parse a judge answer and apply the RLVR format rules (module doc); raise :class:`InvalidJudgeAnswer` if broken.

    Example:
        >>> answer = "B misses the idiom.\\n\\n### Final Ranking:\\n\\nA > B\\n\\n### Scores:\\n\\nA: 8, B: 3\\n"
        >>> validate_judge_answer(answer, ["A", "B"]).scores
        {'A': 8, 'B': 3}
        >>> validate_judge_answer("### Final Ranking:\\nA > B\\n### Scores:\\nA: 8, B: 3", ["A", "B"])
        Traceback (most recent call last):
        ...
        trl_grrm.judge_training.rewards.InvalidJudgeAnswer: no_analysis: 0 characters of analysis, need 1
    """
    expected_ids = list(expected_ids)
    try:
        judgment = parse_gqm_output(text, expected_ids)
    except GQMParseError as error:
        raise InvalidJudgeAnswer(_scores_failure_reason(error), str(error)) from None

    if require_scores_last:
        last_line = next((line for line in reversed(text.splitlines()) if line.strip()), "")
        try:
            last_scores = parse_gqm_output(last_line, expected_ids).scores
        except GQMParseError:
            last_scores = None
        if last_scores != judgment.scores:
            raise InvalidJudgeAnswer("trailing_text", f"the last line is not the scores line: {last_line.strip()!r}")

    if judgment.ranking_agrees is None:
        if require_ranking:
            raise InvalidJudgeAnswer("missing_ranking", "no ranking line before the scores")
    elif judgment.ranking is None:
        raise InvalidJudgeAnswer("bad_ranking", "the ranking line does not parse")
    elif not judgment.ranking_agrees:
        named = sorted(ranking_positions(judgment.ranking))
        if named != sorted(expected_ids):
            raise InvalidJudgeAnswer("candidate_set", f"the ranking names {named}, the group is {sorted(expected_ids)}")
        raise InvalidJudgeAnswer("inconsistent_ranking", "the ranking orders some pair differently from the scores")

    analysis_chars = len(judgment.analysis.strip())
    if analysis_chars < min_analysis_chars:
        raise InvalidJudgeAnswer("no_analysis", f"{analysis_chars} characters of analysis, need {min_analysis_chars}")
    return judgment


def ranking_reward(
    completion: str, ground_truth: str | Mapping[str, Any], config: RankingRewardConfig | None = None
) -> RankingRewardBreakdown:
    """Score one judge completion against its group's ground truth; see the module doc for the formula and rules.

    Example:
        >>> answer = "A keeps the idiom.\\n### Final Ranking:\\nA > B\\n### Scores:\\nA: 9, B: 3"
        >>> ranking_reward(answer, {"A": 8, "B": 3}).reward  # relations right (1.0), gap off by 1 (0.6)
        1.6
    """
    config = config or RankingRewardConfig()
    truth = parse_ground_truth(ground_truth)
    try:
        judgment = validate_judge_answer(
            completion,
            list(truth),
            require_ranking=config.require_ranking,
            require_scores_last=config.require_scores_last,
            min_analysis_chars=config.min_analysis_chars,
        )
    except InvalidJudgeAnswer as invalid:
        return RankingRewardBreakdown(reward=0.0, valid=False, reason=invalid.reason, detail=invalid.detail)
    predicted = judgment.scores
    rank = relation_agreement(predicted, truth, config.ties)
    gap = score_gap_agreement(predicted, truth, config.gap_error_credit)
    anchor = anchor_agreement(predicted, truth, config.anchor_tolerance)
    reward = config.weight_rank * rank + config.weight_gap * gap + config.weight_anchor * anchor
    return RankingRewardBreakdown(reward=float(reward), valid=True, rank=rank, gap=gap, anchor=anchor)


def summarize_breakdowns(breakdowns: Sequence[RankingRewardBreakdown]) -> dict[str, float]:
    """Batch means for logging: ``valid_rate``, ``invalid/<reason>`` shares (every reason, so curves stay
    continuous) and the ``rank`` / ``gap`` / ``anchor`` means over *valid* answers (absent if none was valid).

    Example:
        >>> ok = RankingRewardBreakdown(reward=2.0, valid=True, rank=1.0, gap=1.0, anchor=0.5)
        >>> bad = RankingRewardBreakdown(reward=0.0, valid=False, reason="no_analysis")
        >>> s = summarize_breakdowns([ok, bad]); s["valid_rate"], s["invalid/no_analysis"], s["rank"]
        (0.5, 0.5, 1.0)
    """
    if not breakdowns:
        return {}
    count = len(breakdowns)
    valid = [b for b in breakdowns if b.valid]
    summary = {"valid_rate": len(valid) / count}
    for reason in INVALID_REASONS:
        summary[f"invalid/{reason}"] = sum(b.reason == reason for b in breakdowns) / count
    if valid:
        for part in ("rank", "gap", "anchor"):
            summary[part] = sum(getattr(b, part) for b in valid) / len(valid)
    return summary


class RankingReward:
    """TRL reward function for judge RLVR: pass it in ``reward_funcs`` of ``GRPOTrainer``.

    The dataset needs a ``ground_truth`` column (JSON string or dict ``{"A": 8, "B": 3, ...}``), as made by
    :func:`trl_grrm.data.build_judge_rlvr_dataset`. Completions may be strings or conversational. Batch means of the
    breakdown go to ``log_metric`` as ``<name>/valid_rate``, ``<name>/rank``, ... and each completion's invalid
    reason to the completions table through ``log_extra`` when TRL provides them. ``last_breakdowns`` keeps the
    latest batch's breakdowns for inspection.

    Example:
        >>> reward = RankingReward(weight_anchor=0.5)
        >>> answer = [{"role": "assistant", "content": "B is literal.\\nFinal Ranking: A > B\\nScores: A: 8, B: 3"}]
        >>> reward(prompts=[None], completions=[answer], ground_truth=['{"A": 8, "B": 3}'])
        [2.5]
    """

    def __init__(
        self, config: RankingRewardConfig | None = None, *, name: str = "grrm_ranking_reward", **overrides: Any
    ) -> None:
        if config is not None and overrides:
            raise ValueError("pass either a RankingRewardConfig or keyword overrides, not both")
        self.config = config or RankingRewardConfig(**overrides)
        # TRL names reward columns and metrics after __name__.
        self.__name__ = name
        self.last_breakdowns: list[RankingRewardBreakdown] = []

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        ground_truth: Sequence[str | Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        if ground_truth is None:
            raise ValueError(
                f"{self.__name__} needs a `ground_truth` dataset column with each group's scores, "
                'e.g. \'{"A": 8, "B": 3}\' (see trl_grrm.data.build_judge_rlvr_dataset)'
            )
        if len(ground_truth) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(ground_truth)} ground truths")
        breakdowns = [
            ranking_reward(completion_text(completion), truth, self.config)
            for completion, truth in zip(completions, ground_truth)
        ]
        self.last_breakdowns = breakdowns
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        if log_metric is not None:
            for metric, value in summarize_breakdowns(breakdowns).items():
                log_metric(f"{self.__name__}/{metric}", value)
        log_extra: Callable[[str, list[Any]], None] | None = kwargs.get("log_extra")
        if log_extra is not None:
            log_extra(f"{self.__name__}/invalid_reason", [b.reason or "" for b in breakdowns])
        return [b.reward for b in breakdowns]

    def __repr__(self) -> str:
        return f"RankingReward(name={self.__name__!r}, config={self.config!r})"

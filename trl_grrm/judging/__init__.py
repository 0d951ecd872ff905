"""The judging core shared by the reward functions, the evaluation commands and the inference helpers.

A judge = a format (:class:`JudgeFormat`: prompts, answer parser, score combination) + an engine
(:mod:`trl_grrm.engines`, built by :func:`trl_grrm.engines.build_engine`) + a :class:`RetryPolicy`.
:class:`JudgeRunner` is the only judging loop; :func:`rank` and :func:`best_of_n` wrap it for use outside training.
"""

from .failures import (
    JUDGE_FAILURES,
    PARSE_FAILED,
    PROMPT_TOO_LONG,
    TOO_FEW_DISTINCT,
    TRUNCATED,
    UNAVAILABLE,
    describe_failures,
)
from .judges import JUDGE_FORMATS, PAIRWISE_SCHEMES, GembaSQMJudge, GQMJudge, GRAMJudge, GRAMR2Judge, SQMJudge
from .protocol import JudgeAnswerError, JudgeFormat, JudgeGroup, distinct_candidates
from .runner import MAX_RETRIES_LIMIT, JudgeRequest, attempt_counts, JudgeRunner, JudgeTask, Ranking, RetryPolicy, best_of_n, rank

__all__ = [
    "JUDGE_FAILURES",
    "JUDGE_FORMATS",
    "MAX_RETRIES_LIMIT",
    "PARSE_FAILED",
    "PROMPT_TOO_LONG",
    "TOO_FEW_DISTINCT",
    "TRUNCATED",
    "UNAVAILABLE",
    "GQMJudge",
    "GRAMJudge",
    "GRAMR2Judge",
    "PAIRWISE_SCHEMES",
    "GembaSQMJudge",
    "JudgeAnswerError",
    "JudgeFormat",
    "JudgeGroup",
    "JudgeRequest",
    "JudgeRunner",
    "JudgeTask",
    "Ranking",
    "RetryPolicy",
    "SQMJudge",
    "attempt_counts",
    "best_of_n",
    "describe_failures",
    "distinct_candidates",
    "rank",
]

"""What the judging code shares across the reward function and the evaluation commands."""

from .failures import (
    JUDGE_FAILURES,
    PARSE_FAILED,
    PROMPT_TOO_LONG,
    TOO_FEW_DISTINCT,
    TRUNCATED,
    UNAVAILABLE,
    describe_failures,
)

__all__ = [
    "JUDGE_FAILURES",
    "PARSE_FAILED",
    "PROMPT_TOO_LONG",
    "TOO_FEW_DISTINCT",
    "TRUNCATED",
    "UNAVAILABLE",
    "describe_failures",
]

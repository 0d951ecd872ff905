"""Judge and policy text formats: prompt building and output parsing, no model code."""

from .gqm import (
    CANDIDATE_IDS,
    GQMJudgment,
    GQMParseError,
    build_gqm_prompt,
    fence_for,
    format_gqm_answer,
    parse_gqm_output,
)
from .mt import EXTRACTORS, build_mt_prompt, completion_text, get_extractor

__all__ = [
    "CANDIDATE_IDS",
    "EXTRACTORS",
    "GQMJudgment",
    "GQMParseError",
    "build_gqm_prompt",
    "build_mt_prompt",
    "completion_text",
    "fence_for",
    "format_gqm_answer",
    "get_extractor",
    "parse_gqm_output",
]

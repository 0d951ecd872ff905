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
from .gram import (
    VERDICT_TOKENS,
    GRAMJudgment,
    GRAMVerdictError,
    OrderVerdict,
    build_gram_prompt,
    gram_preference,
    read_order,
    two_way_probability,
)
from .gram_r2 import (
    GRAMR2Judgment,
    GRAMR2ParseError,
    GRAMR2Vote,
    NoUsableVotesError,
    build_gram_r2_prompt,
    parse_gram_r2_output,
    vote_gram_r2,
)
from .mt import EXTRACTORS, build_mt_prompt, completion_text, get_extractor

__all__ = [
    "CANDIDATE_IDS",
    "EXTRACTORS",
    "GQMJudgment",
    "GQMParseError",
    "GRAMJudgment",
    "GRAMR2Judgment",
    "GRAMR2ParseError",
    "GRAMR2Vote",
    "GRAMVerdictError",
    "NoUsableVotesError",
    "OrderVerdict",
    "VERDICT_TOKENS",
    "build_gqm_prompt",
    "build_gram_prompt",
    "build_gram_r2_prompt",
    "build_mt_prompt",
    "completion_text",
    "fence_for",
    "format_gqm_answer",
    "get_extractor",
    "gram_preference",
    "parse_gqm_output",
    "parse_gram_r2_output",
    "read_order",
    "two_way_probability",
    "vote_gram_r2",
]

"""trl-grrm: group-relative (GRRM) judge rewards, GSPO and judge training for Hugging Face TRL."""

__version__ = "0.1.0"

from .formats import build_gqm_prompt, build_mt_prompt, format_gqm_answer, parse_gqm_output
from .rewards import GroupRelativeRewardConfig, GroupRelativeRewardFunction

__all__ = [
    "GroupRelativeRewardConfig",
    "GroupRelativeRewardFunction",
    "build_gqm_prompt",
    "build_mt_prompt",
    "format_gqm_answer",
    "parse_gqm_output",
]

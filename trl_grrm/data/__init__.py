"""Dataset builders: turn ranking datasets into judge SFT and RLVR training sets."""

from .judge_builders import (
    RLVR_FEATURES,
    SFT_FEATURES,
    arrange_group,
    build_judge_rlvr_dataset,
    build_judge_sft_dataset,
    clean_analysis,
    to_prompt_completion,
)

__all__ = [
    "RLVR_FEATURES",
    "SFT_FEATURES",
    "arrange_group",
    "build_judge_rlvr_dataset",
    "build_judge_sft_dataset",
    "clean_analysis",
    "to_prompt_completion",
]

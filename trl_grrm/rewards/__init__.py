"""TRL reward functions backed by group-wise and pairwise judges, and the small reward maths they use."""

from .group_relative import GroupRelativeRewardConfig, GroupRelativeRewardFunction
from .pairwise import PairwiseRewardConfig, PairwiseRewardFunction
from .penalties import soft_overlong_penalty

__all__ = [
    "GroupRelativeRewardConfig",
    "GroupRelativeRewardFunction",
    "PairwiseRewardConfig",
    "PairwiseRewardFunction",
    "soft_overlong_penalty",
]

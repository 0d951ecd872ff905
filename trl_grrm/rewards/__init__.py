"""TRL reward functions backed by group-wise judges, and the small reward maths they use."""

from .group_relative import GroupRelativeRewardConfig, GroupRelativeRewardFunction
from .penalties import soft_overlong_penalty

__all__ = ["GroupRelativeRewardConfig", "GroupRelativeRewardFunction", "soft_overlong_penalty"]

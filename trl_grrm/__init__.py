"""trl-grrm: group-relative (GRRM) judge rewards, GSPO and judge training for Hugging Face TRL.

The trainers are imported on first use, as ``from trl import GRPOTrainer`` does: ``import trl_grrm`` loads neither
torch nor TRL, so a reward-only user (or a CLI that prints its help) stays fast.

Example:
    >>> import trl_grrm
    >>> from trl_grrm import GSPOConfig, RankingReward  # the first access imports trl_grrm.trainers
    >>> GSPOConfig.__module__
    'trl_grrm.trainers.gspo_config'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .engines.config import JudgeConfig
from .formats import build_gqm_prompt, build_mt_prompt, format_gqm_answer, parse_gqm_output
from .rewards import GroupRelativeRewardConfig, GroupRelativeRewardFunction, PairwiseRewardConfig, PairwiseRewardFunction

__version__ = "0.1.0"

# Public name -> submodule that defines it; imported by __getattr__ on first access.
_LAZY_ATTRIBUTES = {
    "GSPOConfig": "trl_grrm.trainers",
    "GSPOTrainer": "trl_grrm.trainers",
    "JudgeRLVRConfig": "trl_grrm.trainers",
    "JudgeRLVRTrainer": "trl_grrm.trainers",
    "RankingReward": "trl_grrm.judge_training",
    "RankingRewardConfig": "trl_grrm.judge_training",
}

if TYPE_CHECKING:
    from .judge_training import RankingReward, RankingRewardConfig
    from .trainers import GSPOConfig, GSPOTrainer, JudgeRLVRConfig, JudgeRLVRTrainer

__all__ = [
    "GroupRelativeRewardConfig",
    "GroupRelativeRewardFunction",
    "JudgeConfig",
    "PairwiseRewardConfig",
    "PairwiseRewardFunction",
    "build_gqm_prompt",
    "build_mt_prompt",
    "format_gqm_answer",
    "parse_gqm_output",
    # lazy, see _LAZY_ATTRIBUTES
    "GSPOConfig",
    "GSPOTrainer",
    "JudgeRLVRConfig",
    "JudgeRLVRTrainer",
    "RankingReward",
    "RankingRewardConfig",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        value = getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'trl_grrm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))

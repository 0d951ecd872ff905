"""Trainers built on TRL: GSPO with the GRRM paper's positive-advantage NLL term."""

from .gspo_config import GSPOConfig
from .gspo_loss import gspo_loss, summarize_gspo_stats
from .gspo_trainer import GSPOTrainer
from .rlvr_config import JudgeRLVRConfig, ranking_reward_config_from
from .rlvr_trainer import JudgeRLVRTrainer

__all__ = ["GSPOConfig", "GSPOTrainer", "gspo_loss", "summarize_gspo_stats"]

__all__ += ["JudgeRLVRConfig", "JudgeRLVRTrainer", "ranking_reward_config_from"]

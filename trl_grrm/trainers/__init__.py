"""Trainers built on TRL: GSPO with the GRRM paper's positive-advantage NLL term."""

from .gspo_config import GSPOConfig
from .gspo_loss import gspo_loss, summarize_gspo_stats
from .gspo_trainer import GSPOTrainer

__all__ = ["GSPOConfig", "GSPOTrainer", "gspo_loss", "summarize_gspo_stats"]

"""Configuration for :class:`trl_grrm.trainers.JudgeRLVRTrainer`: GSPO with the GRRM paper's judge-RLVR settings."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..judge_training.rewards import RankingRewardConfig
from .gspo_config import GSPOConfig

# The GRRM paper's judge RLVR run (seed 001 model card; reference notes, section 3).
JUDGE_RLVR_LEARNING_RATE = 1e-5
JUDGE_RLVR_MIN_LR_RATE = 0.2
JUDGE_RLVR_NUM_GENERATIONS = 8
JUDGE_RLVR_MAX_COMPLETION_LENGTH = 4096

_RANKING_REWARD_FIELDS = tuple(f.name for f in dataclasses.fields(RankingRewardConfig))


def ranking_reward_config_from(section: Mapping[str, Any] | None) -> RankingRewardConfig:
    """Build a :class:`RankingRewardConfig` from a mapping (a YAML section or parsed JSON).

    Unknown keys raise instead of being dropped, so a typo cannot silently train on the default reward.
    ``gap_error_credit`` keys may be strings (JSON has no integer keys).

    Example:
        >>> ranking_reward_config_from({"ties": "half", "gap_error_credit": {"0": 1.0, "1": 0.5}}).gap_error_credit
        {0: 1.0, 1: 0.5}
    """
    section = dict(section or {})
    unknown = sorted(set(section) - set(_RANKING_REWARD_FIELDS))
    if unknown:
        raise ValueError(f"unknown ranking_reward key(s) {unknown}; known: {list(_RANKING_REWARD_FIELDS)}")
    credit = section.get("gap_error_credit")
    if isinstance(credit, Mapping):
        try:
            section["gap_error_credit"] = {int(k): float(v) for k, v in credit.items()}
        except (TypeError, ValueError):
            raise ValueError(f"gap_error_credit must map integer errors to credits, got {dict(credit)}") from None
    return RankingRewardConfig(**section)


@dataclass
class JudgeRLVRConfig(GSPOConfig):
    r"""Configuration for :class:`~trl_grrm.trainers.JudgeRLVRTrainer`: RLVR of a GRRM judge on ranking rewards.

    Every :class:`~trl_grrm.trainers.GSPOConfig` (hence ``trl.GRPOConfig``) field is accepted. The defaults are the
    GRRM paper's judge-RLVR settings (all overridable):

    ================================  ===========================  ============================================
    setting                           default here                 paper
    ================================  ===========================  ============================================
    loss                              GSPO, clip 3e-4 / 4e-4       GSPO ``seq-mean-token-mean``, 3e-4 / 4e-4
    ``sft_coef``                      ``0.0``                      the judge run has no NLL term
    ``beta``                          ``0.0``                      no KL loss, no KL in reward
    ``scale_rewards``                 ``"none"``                   ``norm_adv_by_std_in_grpo=False``
    ``num_generations``               ``8``                        8 rollouts per prompt
    ``learning_rate``                 ``1e-5``                     1e-5
    ``lr_scheduler_type``             ``"cosine_with_min_lr"``     cosine decaying to 0.2 x the peak
    ``lr_scheduler_kwargs``           ``{"min_lr_rate": 0.2}``     (filled in only for that scheduler)
    ``max_completion_length``         ``4096``                     4096
    ``temperature`` / ``top_p``       ``1.0`` / ``1.0``            vLLM rollouts at T = 1.0
    ``num_train_epochs``              ``1``                        1 epoch
    ``ranking_reward``                ``None`` (paper's reward)    ranking agreement + score-gap agreement
    ================================  ===========================  ============================================

    Batch sizes depend on the hardware and stay TRL's: the paper samples 512 prompts x 8 rollouts per rollout
    batch and takes 4 optimiser steps of 128 prompts x 8 on it, i.e. ``generation_batch_size = 4096`` completions
    and ``steps_per_generation = 4 * gradient_accumulation_steps``; ``recipes/configs/rlvr_grrm_full.yaml`` spells
    this out for 16 GPUs.

    Example:
        >>> args = JudgeRLVRConfig(output_dir="rlvr-out", use_cpu=True, ranking_reward={"ties": "half"})
        >>> (args.num_generations, args.sft_coef, args.lr_scheduler_kwargs, args.ranking_reward_config().ties)
        (8, 0.0, {'min_lr_rate': 0.2}, 'half')
    """

    ranking_reward: dict | str | None = field(
        default=None,
        metadata={
            "help": "Settings of the default reward, trl_grrm.judge_training.RankingReward: a mapping (YAML section) "
            "or a JSON string with RankingRewardConfig fields (weight_rank, weight_gap, weight_anchor, ties, "
            "gap_error_credit, anchor_tolerance, require_ranking, require_scores_last, min_analysis_chars). "
            "Unset: the paper's reward (ranking agreement with ties as a class + score-gap agreement, in [0, 2]). "
            "Ignored when the trainer is given reward_funcs."
        },
    )
    sft_coef: float = field(
        default=0.0,
        metadata={
            "help": "Weight of GSPOTrainer's positive-advantage NLL term. The GRRM paper uses it for the MT policy "
            "only; its judge RLVR run has none, hence 0."
        },
    )
    num_generations: int | None = field(
        default=JUDGE_RLVR_NUM_GENERATIONS,
        metadata={"help": "Judge answers sampled per prompt (the group the advantages are centred on). Paper: 8."},
    )
    learning_rate: float = field(
        default=JUDGE_RLVR_LEARNING_RATE,
        metadata={"help": "Peak learning rate (AdamW). Paper: 1e-5 for full fine-tuning of Qwen2.5-7B."},
    )
    lr_scheduler_type: str = field(
        default="cosine_with_min_lr",
        metadata={
            "help": "Learning-rate schedule. Paper: cosine with a floor at 0.2 x the peak, which transformers calls "
            "'cosine_with_min_lr' (min_lr_rate=0.2 is filled into lr_scheduler_kwargs unless you set min_lr or "
            "min_lr_rate there)."
        },
    )
    max_completion_length: int | None = field(
        default=JUDGE_RLVR_MAX_COMPLETION_LENGTH,
        metadata={"help": "Longest judge answer, in tokens. Paper: 4096. A truncated answer has no scores: reward 0."},
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Rollout sampling temperature. Paper: 1.0 (as TRL's default)."}
    )
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Passes over the (augmented) RLVR dataset. Paper: 1."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.ranking_reward, str):
            try:
                self.ranking_reward = json.loads(self.ranking_reward) if self.ranking_reward.strip() else None
            except json.JSONDecodeError as error:
                raise ValueError(f"ranking_reward must be a mapping or a JSON object string: {error}") from None
        if self.ranking_reward is not None and not isinstance(self.ranking_reward, Mapping):
            raise ValueError(f"ranking_reward must be a mapping, got {type(self.ranking_reward).__name__}")
        ranking_reward_config_from(self.ranking_reward)  # fail at parse time, not after the model loaded
        super().__post_init__()
        if str(getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type)) == "cosine_with_min_lr":
            kwargs = dict(self.lr_scheduler_kwargs or {})
            if "min_lr" not in kwargs and "min_lr_rate" not in kwargs:
                kwargs["min_lr_rate"] = JUDGE_RLVR_MIN_LR_RATE
            self.lr_scheduler_kwargs = kwargs

    def ranking_reward_config(self) -> RankingRewardConfig:
        """The :class:`RankingRewardConfig` described by ``ranking_reward``."""
        return ranking_reward_config_from(self.ranking_reward)

"""Configuration for :class:`trl_grrm.trainers.GSPOTrainer`: TRL's ``GRPOConfig`` with the paper's GSPO defaults."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from trl import GRPOConfig

# The GRRM paper's RL recipe (verl ``loss_mode=gspo`` with ``clip_ratio_low=3e-4``, ``clip_ratio_high=4e-4``,
# no KL, Dr.GRPO-style mean-only advantages, ``sft_coef=0.1`` for the MT policy).
PAPER_EPSILON_LOW = 3e-4
PAPER_EPSILON_HIGH = 4e-4
PAPER_SFT_COEF = 0.1


def unsupported_gspo_features(args: GRPOConfig) -> list[str]:
    """Names of ``GRPOConfig`` features set in ``args`` that :class:`GSPOTrainer`'s loss does not implement.

    Example:
        >>> unsupported_gspo_features(GRPOConfig(output_dir="out", use_cpu=True, delta=1.5))
        ['delta=1.5 (two-sided clipping)']
    """
    found = []
    if args.top_entropy_quantile < 1.0:
        found.append(f"top_entropy_quantile={args.top_entropy_quantile} (high-entropy token mask)")
    if args.entropy_coef != 0.0:
        found.append(f"entropy_coef={args.entropy_coef} (entropy bonus)")
    if args.use_adaptive_entropy:
        found.append("use_adaptive_entropy=True (adaptive entropy bonus)")
    if args.off_policy_mask_threshold is not None:
        found.append(f"off_policy_mask_threshold={args.off_policy_mask_threshold} (off-policy sequence mask)")
    if args.delta is not None:
        found.append(f"delta={args.delta} (two-sided clipping)")
    return found


def check_gspo_args(args: GRPOConfig) -> None:
    """Validate ``args`` for GSPO; coerce ``loss_type`` to ``"grpo"`` with a warning (the loss ignores it).

    Raises:
        ValueError: for an unsupported feature or an out-of-range GSPO setting.
    """
    unsupported = unsupported_gspo_features(args)
    if unsupported:
        raise ValueError(
            "GSPOTrainer does not implement these GRPOConfig features, which would otherwise be silently ignored: "
            + "; ".join(unsupported)
            + ". Unset them, or use trl.GRPOTrainer."
        )
    if args.importance_sampling_level not in ("sequence", "token"):
        raise ValueError(
            f"importance_sampling_level must be 'sequence' (GSPO) or 'token', got {args.importance_sampling_level!r}"
        )
    sft_coef = getattr(args, "sft_coef", 0.0)
    if sft_coef < 0:
        raise ValueError(f"sft_coef must be >= 0, got {sft_coef}")
    epsilon_high = args.epsilon if args.epsilon_high is None else args.epsilon_high
    if not 0.0 <= args.epsilon < 1.0 or epsilon_high < 0.0:
        raise ValueError(f"need 0 <= epsilon < 1 and epsilon_high >= 0, got {args.epsilon} and {epsilon_high}")
    if args.loss_type != "grpo":
        warnings.warn(
            f"GSPOTrainer always averages each sequence's token losses and then the sequences (loss_type='grpo'); "
            f"loss_type={args.loss_type!r} is ignored and has been set to 'grpo'.",
            UserWarning,
            stacklevel=3,
        )
        args.loss_type = "grpo"


@dataclass
class GSPOConfig(GRPOConfig):
    r"""Configuration for :class:`~trl_grrm.trainers.GSPOTrainer`.

    Every ``trl.GRPOConfig`` field is accepted. Defaults differ from TRL where the GRRM paper's GSPO recipe does:
    ``epsilon=3e-4``, ``epsilon_high=4e-4``, ``importance_sampling_level="sequence"``, ``loss_type="grpo"``,
    ``scale_rewards="none"``, ``beta=0.0`` (already TRL's default) and the new ``sft_coef=0.1``. Everything is
    overridable. The paper's optimisation settings (learning rate 1e-5 constant, 4 samples per prompt, 4096-token
    completions, 4 optimiser steps per rollout batch) depend on model size and hardware and are therefore left at
    TRL's defaults; see ``docs/gspo.md`` for the full recipe.

    ``top_entropy_quantile < 1``, ``entropy_coef``, ``use_adaptive_entropy``, ``off_policy_mask_threshold`` and
    ``delta`` are rejected: the GSPO loss does not implement them.

    Example:
        >>> from trl_grrm.trainers import GSPOConfig
        >>> args = GSPOConfig(output_dir="gspo-out", steps_per_generation=4, use_cpu=True)  # use_cpu: CPU-only here
        >>> (args.epsilon, args.epsilon_high, args.sft_coef, args.importance_sampling_level)
        (0.0003, 0.0004, 0.1, 'sequence')
    """

    sft_coef: float = field(
        default=PAPER_SFT_COEF,
        metadata={
            "help": "Weight of the auxiliary NLL term on completions with a positive advantage: each token's "
            "negative log-probability weighted by the advantage, averaged per sequence and then over all the "
            "positive-advantage sequences of the accumulation window on all processes (so each weighs the same "
            "whatever per_device_train_batch_size is), with no importance ratio and no clipping. The GRRM paper uses "
            "0.1 for its MT policy ('Stabilizing GRPO'); 0 gives plain GSPO."
        },
    )
    beta: float = field(
        default=0.0,
        metadata={
            "help": "KL coefficient (TRL's k3 estimator against the reference model). The paper uses no KL term, "
            "which is also TRL's default; a value > 0 loads a reference model and adds TRL's KL term unchanged."
        },
    )
    epsilon: float = field(
        default=PAPER_EPSILON_LOW,
        metadata={
            "help": "Lower clip of the sequence importance ratio: ratios below 1 - epsilon stop giving gradient for "
            "negative advantages. GSPO's ratios are length-normalised, hence the tiny window; the paper uses 3e-4."
        },
    )
    epsilon_high: float | None = field(
        default=PAPER_EPSILON_HIGH,
        metadata={
            "help": "Upper clip of the sequence importance ratio (ratios above 1 + epsilon_high stop giving "
            "gradient for positive advantages). The paper uses 4e-4. None means the same as `epsilon`."
        },
    )
    importance_sampling_level: str = field(
        default="sequence",
        metadata={
            "help": "'sequence' (GSPO, the paper): one ratio per completion, the exponential of the mean per-token "
            "log-ratio, applied to every token. 'token': PPO/GRPO per-token ratios with the same aggregation and "
            "auxiliary NLL term (then raise epsilon, e.g. 0.2). At both levels the log-ratio is capped at 10 (as in "
            "verl) with zero gradient beyond, so stale or corrupted old log-probs cannot overflow the loss; "
            "gspo/log_ratio_capped_frac counts the sequences that hit the cap."
        },
    )
    loss_type: str = field(
        default="grpo",
        metadata={
            "help": "Kept for TRL compatibility. GSPO always averages each sequence's token losses and then the "
            "sequences (TRL's 'grpo' aggregation, verl's 'seq-mean-token-mean'); any other value is replaced by "
            "'grpo' with a warning."
        },
    )
    scale_rewards: str = field(
        default="none",
        metadata={
            "help": "Reward scaling for the advantages. The paper subtracts the group mean without dividing by the "
            "group std ('none', as Dr. GRPO); 'group' and 'batch' divide by the group or batch std as in TRL."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_gspo_args(self)

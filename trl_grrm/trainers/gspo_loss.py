"""GSPO policy loss with the GRRM paper's positive-advantage NLL term, as a pure tensor function.

The trainer (:class:`trl_grrm.trainers.GSPOTrainer`) only gathers inputs, calls :func:`gspo_loss` and logs; keeping
the maths here lets the tests check values and gradients against a plain loop on fixed tensors.

Objective, per sequence ``i`` with completion tokens ``t = 1..|y_i|`` and advantage ``A_i``::

    s_i      = exp(min(mean_t(logp_it - old_logp_it), 10))        # sequence-level importance ratio, capped
    r_it     = sg[s_i] * exp(logp_it - sg[logp_it])               # value s_i, gradient s_i * d logp_it
    l_it     = -min(r_it * A_i, clip(r_it, 1 - eps_low, 1 + eps_high) * A_i)
    L_policy = mean_i mean_t l_it                                 # always seq-mean-token-mean
    L_sft    = sum_{i: A_i > 0} mean_t (-A_i * logp_it) / N_pos   # no ratio, no clipping
    L        = L_policy + sft_coef * L_sft

``N_pos`` is the number of positive-advantage sequences. The trainer takes it over the whole accumulation window
and all processes (see ``sft_num_seqs``), so each positive sequence weighs the same whatever the micro-batch size,
as TRL's ``num_items_in_batch`` does for token-summed losses.

The log-ratio is capped at :data:`MAX_LOG_RATIO` (10, as verl's GSPO loss) with zero gradient beyond: a stale or
corrupted ``old_logp`` would otherwise overflow ``exp`` in float32 (a NaN gradient at +100, a loss of 5e21 at +50
with a negative advantage). Within the cap the loss is unchanged; the tiny GSPO clip window sits far inside it.
"""

from __future__ import annotations

from typing import Literal

import torch

# Cap on the (sequence or token) log importance ratio, as verl's GSPO loss: exp(10) ~ 2.2e4 stays finite in bf16 and
# float32 while any ratio this far from 1 is already clipped or capped to no gradient.
MAX_LOG_RATIO = 10.0

# Order of the per-micro-batch sums returned by :func:`gspo_loss`. The trainer stacks them in this order so that one
# all-reduce serves every logged metric.
STAT_KEYS: tuple[str, ...] = (
    "num_rows",
    "num_seqs",
    "num_tokens",
    "clipped_low_tokens",
    "clipped_high_tokens",
    "clipped_low_seqs",
    "clipped_high_seqs",
    "clipped_seqs",
    "seq_ratio_sum",
    "policy_loss_sum",
    "num_pos_seqs",
    "sft_loss_sum",
    "kl_sum",
    "capped_seqs",
)


def positive_sequences(advantages: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: rows that enter the NLL term, i.e. with at least one counted token whose advantage is > 0.

    The trainer counts these over the accumulation window with the same rule that :func:`gspo_loss` applies.

    Example:
        >>> positive_sequences(torch.tensor([1.0, -1.0, 2.0]), torch.tensor([[1, 1], [1, 0], [0, 0]])).tolist()
        [True, False, False]
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    return ((completion_mask > 0) & (advantages > 0)).any(-1)


def gspo_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    epsilon_low: float = 3e-4,
    epsilon_high: float = 4e-4,
    sft_coef: float = 0.1,
    importance_sampling_level: Literal["sequence", "token"] = "sequence",
    importance_sampling_ratio: torch.Tensor | None = None,
    ref_per_token_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    kl_bias_correction: bool = True,
    sft_num_seqs: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO clipped policy loss plus the advantage-weighted NLL of positive-advantage completions.

    Args:
        per_token_logps: ``(B, T)`` log-probabilities of the completion tokens under the current policy (with grad).
        old_per_token_logps: ``(B, T)`` log-probabilities under the policy that sampled the batch, or ``None`` for
            an on-policy step (then the ratio is exactly 1 and clipping is inactive).
        advantages: ``(B,)``, ``(B, 1)`` or per-token ``(B, T)`` advantages.
        completion_mask: ``(B, T)`` 1 for tokens that count, 0 for padding (and tool output, masked truncations).
        epsilon_low: lower clip, the ratio is kept above ``1 - epsilon_low``.
        epsilon_high: upper clip, the ratio is kept below ``1 + epsilon_high``.
        sft_coef: weight of the positive-advantage NLL term; ``0`` gives the plain GSPO loss.
        importance_sampling_level: ``"sequence"`` for GSPO(-token); ``"token"`` for the per-token PPO/GRPO ratio
            with the same aggregation and auxiliary term.
        importance_sampling_ratio: optional ``(B, T)`` or ``(B, 1)`` vLLM-vs-trainer correction weights; they
            multiply the clipped policy term per token, as TRL's ``GRPOTrainer`` does, and leave the NLL term alone.
        ref_per_token_logps: ``(B, T)`` reference log-probabilities, needed when ``beta != 0``.
        beta: coefficient of TRL's k3 KL estimator added to the per-token loss.
        kl_bias_correction: multiply the KL term by the (differentiable) importance ratio, as TRL's
            ``use_bias_correction_kl``.
        sft_num_seqs: what the NLL term's sum over positive sequences is divided by. ``None`` (default): the number
            of positive sequences in this call. :class:`~trl_grrm.trainers.GSPOTrainer` passes the positive
            sequences of the whole accumulation window on all processes divided by ``num_processes *
            gradient_accumulation_steps``: after the trainer's division by the accumulation steps and the
            processes' gradient averaging, every positive sequence of the window then has weight ``1 / N_pos``.

    Returns:
        ``(loss, stats)``: the scalar loss, *not* divided for gradient accumulation, and a dict of detached local sums
        and counts keyed by :data:`STAT_KEYS`; sum them over processes and pass them to :func:`summarize_gspo_stats`.

    Example:
        >>> import torch
        >>> logps = torch.log(torch.full((2, 3), 0.5, requires_grad=True))
        >>> loss, stats = gspo_loss(logps, logps.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 3))
        >>> round(loss.item(), 4)  # on-policy: policy term 0, NLL of the positive sequence 0.1 * log(2)
        0.0693
        >>> summarize_gspo_stats(stats)["gspo/seq_ratio_mean"]
        1.0
    """
    if importance_sampling_level not in ("sequence", "token"):
        raise ValueError(f"importance_sampling_level must be 'sequence' or 'token', got {importance_sampling_level!r}")
    if beta != 0.0 and ref_per_token_logps is None:
        raise ValueError("beta != 0 needs ref_per_token_logps")

    mask = completion_mask.to(per_token_logps.dtype)
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    if old_per_token_logps is None:
        old_per_token_logps = per_token_logps.detach()

    token_counts = mask.sum(-1)
    lengths = token_counts.clamp(min=1.0)
    log_ratio = per_token_logps - old_per_token_logps
    # The differentiable sequence log-ratio serves the KL bias correction (TRL's semantics) and the logged s_i.
    seq_log_ratio = ((log_ratio * mask).sum(-1) / lengths).unsqueeze(-1)
    if importance_sampling_level == "sequence":
        # Same value as exp(seq_log_ratio), but each token's gradient goes through its own log-prob (GSPO-token form),
        # which also lets per-token vLLM correction weights act on each token's gradient separately.
        token_log_ratio = seq_log_ratio.detach() + (per_token_logps - per_token_logps.detach())
    else:
        token_log_ratio = log_ratio
    # clamp passes no gradient above the cap, so an overflowing ratio neither explodes the loss nor yields inf * 0.
    ratio = torch.exp(token_log_ratio.clamp(max=MAX_LOG_RATIO))
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    per_token_loss = -torch.min(ratio * advantages, clipped_ratio * advantages)

    if importance_sampling_ratio is not None:
        per_token_loss = per_token_loss * importance_sampling_ratio

    per_token_kl = None
    if beta != 0.0:
        ref_diff = ref_per_token_logps - per_token_logps
        per_token_kl = torch.exp(ref_diff) - ref_diff - 1.0
        if kl_bias_correction:
            weight = seq_log_ratio if importance_sampling_level == "sequence" else log_ratio
            per_token_kl = per_token_kl * torch.exp(weight.clamp(max=MAX_LOG_RATIO))
        per_token_loss = per_token_loss + beta * per_token_kl

    per_seq_loss = (per_token_loss * mask).sum(-1) / lengths
    # Rows without any counted token stay in the denominator, matching TRL's "grpo" aggregation exactly.
    policy_loss = per_seq_loss.mean()

    # Token-level weights: for (B, 1) advantages a sequence is either fully in or fully out.
    positive_mask = mask * (advantages > 0).to(mask.dtype)
    positive_counts = positive_mask.sum(-1)
    per_seq_nll = -(advantages.clamp(min=0.0) * per_token_logps * positive_mask).sum(-1) / positive_counts.clamp(
        min=1.0
    )
    num_pos_seqs = positive_sequences(advantages, mask).sum()
    if sft_num_seqs is None:
        sft_num_seqs = num_pos_seqs
    sft_divisor = torch.as_tensor(sft_num_seqs, dtype=per_seq_nll.dtype, device=per_seq_nll.device)
    # A window without positive sequences has a zero sum anyway; the floor only avoids 0 / 0.
    sft_loss = per_seq_nll.sum() / sft_divisor.clamp(min=torch.finfo(per_seq_nll.dtype).tiny)

    loss = policy_loss + sft_coef * sft_loss if sft_coef != 0.0 else policy_loss

    with torch.no_grad():
        is_low = ((ratio < 1.0 - epsilon_low) & (advantages < 0)).to(mask.dtype) * mask
        is_high = ((ratio > 1.0 + epsilon_high) & (advantages > 0)).to(mask.dtype) * mask
        has_tokens = token_counts > 0
        low_seq = is_low.sum(-1) > 0
        high_seq = is_high.sum(-1) > 0
        sums = {
            "num_rows": torch.tensor(float(mask.size(0)), device=mask.device, dtype=mask.dtype),
            "num_seqs": has_tokens.sum().to(mask.dtype),
            "num_tokens": mask.sum(),
            "clipped_low_tokens": is_low.sum(),
            "clipped_high_tokens": is_high.sum(),
            "clipped_low_seqs": low_seq.sum().to(mask.dtype),
            "clipped_high_seqs": high_seq.sum().to(mask.dtype),
            "clipped_seqs": (low_seq | high_seq).sum().to(mask.dtype),
            "seq_ratio_sum": (
                torch.exp(seq_log_ratio.detach().clamp(max=MAX_LOG_RATIO)).squeeze(-1) * has_tokens
            ).sum(),
            "policy_loss_sum": per_seq_loss.detach().sum(),
            "num_pos_seqs": num_pos_seqs.to(mask.dtype),
            "sft_loss_sum": per_seq_nll.detach().sum(),
            "kl_sum": (per_token_kl.detach() * mask).sum()
            if per_token_kl is not None
            else torch.zeros((), device=mask.device, dtype=mask.dtype),
            "capped_seqs": (((token_log_ratio.detach() > MAX_LOG_RATIO).to(mask.dtype) * mask).sum(-1) > 0)
            .sum()
            .to(mask.dtype),
        }
    return loss, sums


def summarize_gspo_stats(
    sums: dict[str, torch.Tensor | float],
    importance_sampling_level: Literal["sequence", "token"] = "sequence",
    include_kl: bool = False,
) -> dict[str, float]:
    """Turn the (process-summed) sums of :func:`gspo_loss` into the logged metrics.

    ``gspo/*`` keys: token shares clipped low/high, mean sequence ratio ``s_i`` (capped as the loss caps it), share of
    sequences with a clipped (zero-gradient) token, share of sequences whose log-ratio hit :data:`MAX_LOG_RATIO`
    (``gspo/log_ratio_capped_frac``; above 0 means stale or corrupted old log-probs), the policy loss and the mean NLL
    per positive sequence (NaN when no sequence had a positive advantage, so that TRL's NaN-aware averaging skips
    it). ``clip_ratio/*`` keys follow TRL's ``GRPOTrainer``: at
    sequence level they are shares of rows, at token level shares of tokens.

    Example:
        >>> summarize_gspo_stats({k: 1.0 for k in STAT_KEYS})["gspo/clipped_token_frac_low"]
        1.0
    """

    def value(key: str) -> float:
        v = sums[key]
        return float(v.item()) if isinstance(v, torch.Tensor) else float(v)

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else float("nan")

    tokens, seqs, rows = value("num_tokens"), value("num_seqs"), value("num_rows")
    low_tok, high_tok = value("clipped_low_tokens"), value("clipped_high_tokens")
    metrics = {
        "gspo/clipped_token_frac_low": ratio(low_tok, tokens),
        "gspo/clipped_token_frac_high": ratio(high_tok, tokens),
        "gspo/seq_ratio_mean": ratio(value("seq_ratio_sum"), seqs),
        "gspo/seq_clipped_frac": ratio(value("clipped_seqs"), seqs),
        "gspo/policy_loss": ratio(value("policy_loss_sum"), rows),
        "gspo/pos_adv_nll": ratio(value("sft_loss_sum"), value("num_pos_seqs")),
        "gspo/log_ratio_capped_frac": ratio(value("capped_seqs"), seqs),
    }
    if importance_sampling_level == "sequence":
        low, high = value("clipped_low_seqs"), value("clipped_high_seqs")
        metrics["clip_ratio/low_mean"] = ratio(low, rows)
        metrics["clip_ratio/high_mean"] = ratio(high, rows)
        metrics["clip_ratio/region_mean"] = ratio(value("clipped_seqs"), rows)
    else:
        metrics["clip_ratio/low_mean"] = ratio(low_tok, tokens)
        metrics["clip_ratio/high_mean"] = ratio(high_tok, tokens)
        metrics["clip_ratio/region_mean"] = ratio(low_tok + high_tok, tokens)
    if include_kl:
        metrics["kl"] = ratio(value("kl_sum"), tokens)
    return metrics

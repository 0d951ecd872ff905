"""gspo_loss against a loop over plain Python floats with hand-derived gradients (no autograd in the reference)."""

from __future__ import annotations

import math

import pytest
import torch

from trl_grrm.trainers.gspo_loss import MAX_LOG_RATIO, STAT_KEYS, gspo_loss, positive_sequences, summarize_gspo_stats

EPS_LOW, EPS_HIGH = 3e-4, 4e-4

# Row lengths 5, 3, 1, 0 (fully masked) and 4; advantages of both signs and one zero.
MASK = [
    [1, 1, 1, 1, 1],
    [1, 1, 1, 0, 0],
    [1, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [1, 1, 1, 1, 0],
]
ADVANTAGES = [1.5, -0.7, 0.0, 2.0, -1.2]


def reference(lp, old, adv, mask, eps_low, eps_high, sft_coef, level, is_ratio=None, ref=None, beta=0.0):
    """Loss value and d loss / d logp for every (i, t), written out term by term from the paper's formulas."""
    n_rows, n_cols = len(lp), len(lp[0])
    grad = [[0.0] * n_cols for _ in range(n_rows)]
    policy_total = 0.0
    for i in range(n_rows):
        toks = [t for t in range(n_cols) if mask[i][t]]
        length = max(len(toks), 1)
        seq_ratio = math.exp(sum(lp[i][t] - old[i][t] for t in toks) / length)
        kl_sum = 0.0
        row_loss = 0.0
        for t in toks:
            r = seq_ratio if level == "sequence" else math.exp(lp[i][t] - old[i][t])
            w = 1.0 if is_ratio is None else is_ratio[i][t if len(is_ratio[i]) > 1 else 0]
            a = adv[i]
            unclipped, clipped = r * a, min(max(r, 1 - eps_low), 1 + eps_high) * a
            row_loss += -min(unclipped, clipped) * w
            # The clipped branch is flat in logp; the unclipped one has d(r)/d(logp_it) = r (token's own path).
            if unclipped <= clipped:
                grad[i][t] += -a * r * w / length / n_rows
            if beta:
                d = ref[i][t] - lp[i][t]
                kl = math.exp(d) - d - 1
                dkl = -math.exp(d) + 1
                row_loss += beta * kl * r
                grad[i][t] += beta * dkl * r / length / n_rows
                kl_sum += kl
        if beta:
            # The bias-correction weight depends on every token of the row (sequence level) or only its own token.
            for t in toks:
                if level == "sequence":
                    grad[i][t] += beta * kl_sum * seq_ratio / length / length / n_rows
                else:
                    d = ref[i][t] - lp[i][t]
                    grad[i][t] += beta * (math.exp(d) - d - 1) * math.exp(lp[i][t] - old[i][t]) / length / n_rows
        policy_total += row_loss / length
    loss = policy_total / n_rows

    positive = [i for i in range(n_rows) if adv[i] > 0 and any(mask[i])]
    if positive:
        sft = 0.0
        for i in positive:
            toks = [t for t in range(n_cols) if mask[i][t]]
            sft += sum(-adv[i] * lp[i][t] for t in toks) / len(toks)
            for t in toks:
                grad[i][t] += sft_coef * (-adv[i]) / len(toks) / len(positive)
        loss += sft_coef * sft / len(positive)
    return loss, grad


def make_logps(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.log(torch.rand(len(MASK), len(MASK[0]), generator=g, dtype=torch.float64) * 0.9 + 0.05)


def off_policy_old(logps: torch.Tensor) -> torch.Tensor:
    """Old log-probs whose per-row mean log-ratio puts rows clipped high, clipped low and inside the window."""
    row_shift = torch.tensor([1e-3, -1e-3, 5e-4, -2e-3, 1e-4], dtype=torch.float64)
    # Token noise with zero mean over each row's counted tokens leaves the sequence ratio at exp(row_shift) but
    # makes the token ratios differ, which the token-level and per-token-weight cases need.
    mask = torch.tensor(MASK, dtype=torch.float64)
    noise = torch.tensor([[0.02, -0.01, 0.03, -0.04, 0.05]], dtype=torch.float64) * mask
    noise = (noise - noise.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)) * mask
    return logps.detach() - row_shift[:, None] + noise


def run(logps, old, sft_coef, level="sequence", eps_low=EPS_LOW, eps_high=EPS_HIGH, **kw):
    lp = logps.detach().clone().requires_grad_(True)
    loss, stats = gspo_loss(
        lp,
        old,
        torch.tensor(ADVANTAGES, dtype=torch.float64),
        torch.tensor(MASK, dtype=torch.float64),
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        sft_coef=sft_coef,
        importance_sampling_level=level,
        **kw,
    )
    loss.backward()
    return loss, lp.grad, stats


def check(logps, old, sft_coef, level="sequence", eps_low=EPS_LOW, eps_high=EPS_HIGH, **kw):
    loss, grad, stats = run(logps, old, sft_coef, level, eps_low, eps_high, **kw)
    old_list = (logps.detach() if old is None else old).tolist()
    ref_kw = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    ref_kw = {
        "is_ratio": ref_kw.get("importance_sampling_ratio"),
        "ref": ref_kw.get("ref_per_token_logps"),
        "beta": ref_kw.get("beta", 0.0),
    }
    ref_loss, ref_grad = reference(
        logps.tolist(), old_list, ADVANTAGES, MASK, eps_low, eps_high, sft_coef, level, **ref_kw
    )
    assert loss.item() == pytest.approx(ref_loss, abs=1e-6, rel=1e-6)
    torch.testing.assert_close(grad, torch.tensor(ref_grad, dtype=torch.float64), atol=1e-6, rtol=1e-6)
    return loss, grad, stats


@pytest.mark.parametrize("sft_coef", [0.0, 0.1, 0.7])
def test_on_policy(sft_coef):
    logps = make_logps()
    _, grad, stats = check(logps, None, sft_coef)
    metrics = summarize_gspo_stats(stats)
    assert metrics["gspo/seq_ratio_mean"] == pytest.approx(1.0)
    assert metrics["gspo/seq_clipped_frac"] == 0.0
    # Fully masked row and zero-advantage row get no gradient at all.
    assert torch.all(grad[3] == 0) and torch.all(grad[2] == 0)


@pytest.mark.parametrize("sft_coef", [0.0, 0.1])
def test_off_policy_with_clipping(sft_coef):
    logps = make_logps(1)
    old = off_policy_old(logps)
    _, grad, stats = check(logps, old, sft_coef)
    # Row 0: A>0, ratio e^1e-3 > 1+4e-4 -> clipped. Row 1: A<0, ratio e^-1e-3 < 1-3e-4 -> clipped.
    # Row 4: ratio inside the window -> gradient. Row 3 is fully masked despite its shift.
    if sft_coef == 0.0:
        assert torch.all(grad[0] == 0) and torch.all(grad[1] == 0)
    assert torch.all(grad[4][:4] != 0)
    metrics = summarize_gspo_stats(stats)
    assert metrics["gspo/seq_clipped_frac"] == pytest.approx(2 / 4)  # rows 0, 1 of the 4 with tokens
    assert metrics["gspo/clipped_token_frac_high"] == pytest.approx(5 / 13)
    assert metrics["gspo/clipped_token_frac_low"] == pytest.approx(3 / 13)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(2 / 5)  # TRL counts every row
    expected_ratio = (math.exp(1e-3) + math.exp(-1e-3) + math.exp(5e-4) + math.exp(1e-4)) / 4
    assert metrics["gspo/seq_ratio_mean"] == pytest.approx(expected_ratio, rel=1e-12)


def test_off_policy_unclipped_gradient_scales_with_ratio():
    """With a wide window nothing is clipped and each token's gradient is -A * s_i / (|y_i| * B)."""
    logps = make_logps(2)
    old = off_policy_old(logps)
    _, grad, stats = check(logps, old, 0.0, eps_low=0.5, eps_high=0.5)
    assert summarize_gspo_stats(stats)["gspo/seq_clipped_frac"] == 0.0
    assert grad[0, 0].item() == pytest.approx(-1.5 * math.exp(1e-3) / 5 / 5, rel=1e-12)


@pytest.mark.parametrize("sft_coef", [0.0, 0.1])
def test_token_level(sft_coef):
    logps = make_logps(3)
    check(logps, off_policy_old(logps), sft_coef, level="token", eps_low=0.01, eps_high=0.02)


def test_per_token_importance_weights_and_kl():
    logps = make_logps(4)
    old = off_policy_old(logps)
    g = torch.Generator().manual_seed(5)
    is_ratio = torch.rand(logps.shape, generator=g, dtype=torch.float64) + 0.5
    ref = logps.detach() + 0.1 * torch.randn(logps.shape, generator=g, dtype=torch.float64)
    for level, eps in (("sequence", (EPS_LOW, EPS_HIGH)), ("token", (0.02, 0.02))):
        _, _, stats = check(
            logps,
            old,
            0.1,
            level,
            *eps,
            importance_sampling_ratio=is_ratio,
            ref_per_token_logps=ref,
            beta=0.04,
        )
        assert summarize_gspo_stats(stats, level, include_kl=True)["kl"] > 0


def test_sequence_ratio_importance_weights_broadcast():
    logps = make_logps(6)
    weights = torch.tensor([[0.5], [1.0], [2.0], [0.0], [1.5]], dtype=torch.float64)
    check(logps, off_policy_old(logps), 0.1, importance_sampling_ratio=weights, eps_low=0.5, eps_high=0.5)


def test_sft_term_only_counts_positive_sequences():
    logps = make_logps(7)
    loss_with, _, stats = run(logps, None, 1.0)
    loss_without, _, _ = run(logps, None, 0.0)
    lp = logps.tolist()
    expected = 1.5 * -sum(lp[0]) / 5  # row 3 (A=2) has no tokens, so only row 0 counts
    assert (loss_with - loss_without).item() == pytest.approx(expected, rel=1e-12)
    assert stats["num_pos_seqs"].item() == 1
    assert summarize_gspo_stats(stats)["gspo/pos_adv_nll"] == pytest.approx(expected, rel=1e-12)


def test_no_positive_sequence_gives_zero_sft_and_nan_metric():
    logps = make_logps(8).requires_grad_(True)
    mask = torch.ones_like(logps)
    loss, stats = gspo_loss(logps, None, -torch.ones(logps.size(0), dtype=torch.float64), mask, sft_coef=0.1)
    assert loss.item() == pytest.approx(1.0)  # on-policy ratio 1: -min(-1, -1) per token
    assert math.isnan(summarize_gspo_stats(stats)["gspo/pos_adv_nll"])


def test_per_token_advantages_shape():
    logps = make_logps(9)
    adv_rows = torch.tensor(ADVANTAGES, dtype=torch.float64)
    mask = torch.tensor(MASK, dtype=torch.float64)
    old = off_policy_old(logps)
    loss_1d, _ = gspo_loss(logps, old, adv_rows, mask, sft_coef=0.1)
    loss_2d, _ = gspo_loss(logps, old, adv_rows[:, None].expand_as(mask).clone(), mask, sft_coef=0.1)
    assert loss_1d.item() == pytest.approx(loss_2d.item(), rel=1e-12)


def test_stats_keys_and_docstring_example():
    logps = torch.log(torch.full((2, 3), 0.5, dtype=torch.float64))
    loss, stats = gspo_loss(logps, logps, torch.tensor([1.0, -1.0], dtype=torch.float64), torch.ones(2, 3))
    assert set(stats) == set(STAT_KEYS)
    assert loss.item() == pytest.approx(0.1 * math.log(2))


def test_bad_arguments():
    logps = make_logps()
    mask = torch.ones_like(logps)
    adv = torch.zeros(logps.size(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="importance_sampling_level"):
        gspo_loss(logps, None, adv, mask, importance_sampling_level="group")
    with pytest.raises(ValueError, match="ref_per_token_logps"):
        gspo_loss(logps, None, adv, mask, beta=0.1)


def test_sft_term_is_mean_over_sequences_of_each_sequence_token_mean():
    """Two positive sequences of lengths 4 and 1: per-sequence means, then their mean (not a mean over 5 tokens)."""
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.5, 0.125], [0.1, 0.9, 0.9, 0.9]], dtype=torch.float64))
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float64)
    adv = torch.tensor([2.0, 1.0], dtype=torch.float64)
    with_sft, _ = gspo_loss(lp, None, adv, mask, sft_coef=1.0)
    without, _ = gspo_loss(lp, None, adv, mask, sft_coef=0.0)
    seq0 = 2.0 * (math.log(2) + math.log(4) + math.log(2) + math.log(8)) / 4  # 2 * 8 ln2 / 4 = 4 ln2
    seq1 = 1.0 * math.log(10)
    assert (with_sft - without).item() == pytest.approx((seq0 + seq1) / 2, rel=1e-12)


def test_sft_num_seqs_sets_the_divisor_of_the_summed_nll():
    lp = torch.log(torch.tensor([[0.5, 0.25], [0.1, 0.9]], dtype=torch.float64))
    mask = torch.ones(2, 2, dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    base, _ = gspo_loss(lp, None, adv, mask, sft_coef=0.0)
    nll = (math.log(2) + math.log(4)) / 2  # the one positive sequence
    for divisor in (0.5, 4.0, torch.tensor(2.0)):
        loss, stats = gspo_loss(lp, None, adv, mask, sft_coef=1.0, sft_num_seqs=divisor)
        assert (loss - base).item() == pytest.approx(nll / float(divisor), rel=1e-12)
        assert summarize_gspo_stats(stats)["gspo/pos_adv_nll"] == pytest.approx(nll)  # the metric stays per sequence
    # A window without positive sequences: divisor 0 and a zero sum give no NLL term, not NaN.
    loss, _ = gspo_loss(lp, None, -adv.abs(), mask, sft_coef=1.0, sft_num_seqs=0.0)
    assert math.isfinite(loss.item())


def simulated_window_grad(logps, adv, mask, processes: int, micro_batches: int) -> torch.Tensor:
    """What the trainer does, with the cross-process sum of the count and DDP's gradient mean written out."""
    rows = logps.size(0)
    window_positive = positive_sequences(adv, mask).sum()  # the all-gathered count over every process
    per_call = window_positive / (processes * micro_batches)
    total = torch.zeros_like(logps)
    size = rows // (processes * micro_batches)
    for start in range(0, rows, size):
        lp = logps.detach().clone().requires_grad_(True)
        sl = slice(start, start + size)
        loss, _ = gspo_loss(lp[sl], None, adv[sl], mask[sl], sft_coef=1.0, sft_num_seqs=per_call)
        (loss / micro_batches).backward()
        total += lp.grad / processes
    return total


def test_window_normalisation_is_independent_of_the_layout():
    """8 rows: 1 micro-batch, 2 micro-batches (GA=2), 2 processes, 2 x 2: same gradient, each positive row 1/N."""
    g = torch.Generator().manual_seed(11)
    logps = torch.log(torch.rand(8, 3, generator=g, dtype=torch.float64) * 0.9 + 0.05)
    mask = torch.ones(8, 3, dtype=torch.float64)
    mask[5, 1:] = 0
    adv = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75], dtype=torch.float64)
    one = simulated_window_grad(logps, adv, mask, processes=1, micro_batches=1)
    for processes, micro_batches in ((1, 2), (2, 1), (2, 2)):
        torch.testing.assert_close(simulated_window_grad(logps, adv, mask, processes, micro_batches), one)
    # By hand: token t of positive row i gets -A_i / (|y_i| * 4) from the NLL term plus -A_i / (|y_i| * 8) from the
    # on-policy policy term (ratio 1, mean over the 8 rows).
    assert one[0, 0].item() == pytest.approx(-0.75 / 3 / 4 - 0.75 / 3 / 8, rel=1e-12)
    assert one[5, 0].item() == pytest.approx(-0.25 / 1 / 4 - 0.25 / 1 / 8, rel=1e-12)


@pytest.mark.parametrize("level", ["sequence", "token"])
def test_huge_log_ratio_is_capped_without_nan(level):
    """float32, as in training: log-ratio +100 with A > 0, +50 with A < 0 (a stale or corrupted old_logp)."""
    lp = torch.log(torch.full((2, 3), 0.5)).requires_grad_(True)
    old = lp.detach() - torch.tensor([[100.0], [50.0]])
    adv = torch.tensor([1.0, -2.0])
    loss, stats = gspo_loss(lp, old, adv, torch.ones(2, 3), sft_coef=0.0, importance_sampling_level=level)
    loss.backward()
    assert torch.isfinite(lp.grad).all()
    # Row 0 sits in the flat clipped branch; row 1's ratio is held at e^10 with zero gradient beyond the cap.
    assert torch.all(lp.grad == 0)
    expected = (-(1 + EPS_HIGH) * 1.0 + 2.0 * math.exp(MAX_LOG_RATIO)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    metrics = summarize_gspo_stats(stats, level)
    assert metrics["gspo/log_ratio_capped_frac"] == 1.0
    assert metrics["gspo/seq_ratio_mean"] == pytest.approx(math.exp(MAX_LOG_RATIO), rel=1e-5)


def test_log_ratio_below_the_cap_is_untouched():
    lp = make_logps(12)
    old = lp.detach() - 9.0  # ratio e^9: within the cap, wide window so the gradient flows unclipped
    _, grad, stats = check(lp, old, 0.0, eps_low=0.5, eps_high=1e5)
    assert stats["capped_seqs"].item() == 0
    assert grad[0, 0].item() == pytest.approx(-1.5 * math.exp(9.0) / 5 / 5, rel=1e-9)

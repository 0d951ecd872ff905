"""Comparison graphs, subgroup schedules, Bradley-Terry / Plackett-Luce fits and the 0-10 mapping (pure maths, fast)."""

import itertools
import math
from collections import deque

import numpy as np
import pytest

from trl_grrm.comparisons import (
    bradley_terry_fit,
    candidate_orders,
    default_num_pairs,
    fit_subgroup_scores,
    plackett_luce_fit,
    reference_pairs,
    round_robin_pairs,
    sampled_comparison_graph,
    strengths_to_scores,
    strengths_to_win_rates,
    subgroup_schedule,
)

# --- independent helpers (no code from the module under test) -------------------------------------------------------


def _average_ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2
        start = end + 1
    return ranks


def spearman(a, b):
    ra, rb = _average_ranks(list(a)), _average_ranks(list(b))
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def is_connected(n, groups):
    """BFS over the graph where two candidates are adjacent when they share a pair or a subgroup."""
    neighbours = {v: set() for v in range(n)}
    for group in groups:
        for a in group:
            neighbours[a].update(b for b in group if b != a)
    seen, queue = {0}, deque([0])
    while queue:
        for w in neighbours[queue.popleft()] - seen:
            seen.add(w)
            queue.append(w)
    return len(seen) == n


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# --- orders of a whole group ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 6, 11])
def test_candidate_orders_are_permutations_distinct_while_any_are_left(n, count):
    orders = candidate_orders(n, count)
    assert len(orders) == count and orders[0] == list(range(n))
    assert all(sorted(order) == list(range(n)) for order in orders)
    distinct = {tuple(order) for order in orders}
    assert len(distinct) == min(count, 2 * n if n > 2 else n)  # rotations and their reverses, then repeats


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("count", [2, 4, 6])
def test_an_even_number_of_orders_puts_every_candidate_on_the_middle_slot_on_average(n, count):
    orders = candidate_orders(n, count)
    mean_slot = [sum(order.index(c) for order in orders) / count for c in range(n)]
    assert mean_slot == pytest.approx([(n - 1) / 2] * n)


@pytest.mark.parametrize("count", [0, -1, 1.5, True])
def test_candidate_orders_refuses_a_count_that_is_not_a_positive_integer(count):
    with pytest.raises(ValueError, match="count"):
        candidate_orders(4, count)


# --- pairs ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 9])
def test_round_robin_pairs_cover_every_pair_once_with_balanced_order(n):
    pairs = round_robin_pairs(n)
    assert sorted(tuple(sorted(p)) for p in pairs) == list(itertools.combinations(range(n), 2))
    for c in range(n):
        first = sum(p[0] == c for p in pairs)
        second = sum(p[1] == c for p in pairs)
        assert abs(first - second) <= 1


def test_reference_pairs_put_every_other_candidate_against_the_reference():
    assert reference_pairs(5, 0) == [(1, 0), (2, 0), (3, 0), (4, 0)]
    assert reference_pairs(1, 0) == []
    with pytest.raises(ValueError, match="reference_index: candidate 5 is not in 0..4"):
        reference_pairs(5, 5)


@pytest.mark.parametrize("n", [5, 8, 16, 32])
def test_sampled_graph_is_connected_balanced_and_within_the_call_budget(n):
    expected_pairs = min(n * (n - 1) // 2, round(n * math.log2(n)))  # n=16: 64
    for seed in range(20):
        pairs = sampled_comparison_graph(n, seed=seed)
        assert len(pairs) == expected_pairs
        assert len({frozenset(p) for p in pairs}) == len(pairs)  # no pair twice
        assert all(a != b and 0 <= a < n and 0 <= b < n for a, b in pairs)
        assert is_connected(n, pairs)
        degree = [sum(c in p for p in pairs) for c in range(n)]
        assert max(degree) - min(degree) <= 1
        for c in range(n):
            assert abs(sum(p[0] == c for p in pairs) - sum(p[1] == c for p in pairs)) <= 1
        if n == 16:
            # The target counts judge calls: both orders of every pair.
            assert 2 * len(pairs) <= 2.5 * n * math.log2(n)


def test_sampled_graph_depends_only_on_its_seed():
    assert sampled_comparison_graph(12, seed=3) == sampled_comparison_graph(12, seed=3)
    assert {frozenset(p) for p in sampled_comparison_graph(12, seed=3)} != {
        frozenset(p) for p in sampled_comparison_graph(12, seed=4)
    }


def test_sampled_graph_with_every_pair_in_budget_is_the_round_robin():
    pairs = sampled_comparison_graph(6, seed=1, num_pairs=100)
    assert {frozenset(p) for p in pairs} == {frozenset(p) for p in itertools.combinations(range(6), 2)}
    assert default_num_pairs(4) == 6  # 4 * log2(4) = 8 > 6 pairs exist


def test_sampled_graph_refuses_a_budget_that_cannot_connect_the_group():
    with pytest.raises(ValueError, match="num_pairs=3 cannot connect 5 candidates: it needs at least 4"):
        sampled_comparison_graph(5, num_pairs=3)
    pairs = sampled_comparison_graph(5, num_pairs=4)  # a spanning path
    assert len(pairs) == 4 and is_connected(5, pairs)


# --- Bradley-Terry ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_bradley_terry_recovers_known_strengths_from_noisy_soft_outcomes(seed):
    n = 16
    rng = np.random.default_rng(seed)
    truth = rng.normal(0.0, 1.5, n)
    comparisons = [
        (i, j, sigmoid(truth[i] - truth[j] + rng.normal(0.0, 0.7))) for i, j in sampled_comparison_graph(n, seed)
    ]
    assert spearman(bradley_terry_fit(n, comparisons), truth) >= 0.9


def test_bradley_terry_turns_a_soft_outcome_into_its_logit():
    # Two candidates, P(0 beats 1) = 0.8, a negligible prior: s0 - s1 = log(0.8 / 0.2) = log 4, mean zero.
    s = bradley_terry_fit(2, [(0, 1, 0.8)], prior=1e-9)
    assert s[0] - s[1] == pytest.approx(math.log(4), abs=1e-6)
    assert s[0] + s[1] == pytest.approx(0.0, abs=1e-12)
    # The same verdict seen from the other side (both orders) gives the same answer.
    both = bradley_terry_fit(2, [(0, 1, 0.8), (1, 0, 0.2)], prior=1e-9)
    assert both == pytest.approx(s, abs=1e-6)


def test_bradley_terry_stays_finite_under_perfect_separation():
    n, prior = 6, 0.1
    comparisons = [(i, j, 1.0) for i, j in itertools.combinations(range(n), 2)]  # lower index always wins
    s = bradley_terry_fit(n, comparisons, prior=prior)
    assert all(math.isfinite(x) for x in s)
    assert all(a > b for a, b in itertools.pairwise(s))
    # The fit beats the all-zero start, whose log-likelihood is -m log 2, so prior/2 * sum(s^2) <= m log 2.
    assert sum(x * x for x in s) <= 2 * len(comparisons) * math.log(2) / prior


def test_bradley_terry_all_ties_give_equal_strengths():
    comparisons = [(i, j, 0.5) for i, j in round_robin_pairs(5)]
    assert bradley_terry_fit(5, comparisons) == [0.0] * 5


def test_bradley_terry_relabelling_candidates_permutes_the_strengths():
    n = 7
    rng = np.random.default_rng(0)
    comparisons = [(i, j, float(rng.uniform())) for i, j in sampled_comparison_graph(n, 0)]
    relabel = [3, 6, 0, 5, 1, 4, 2]  # candidate c becomes relabel[c]
    relabelled = [(relabel[i], relabel[j], p) for i, j, p in comparisons]
    original, moved = bradley_terry_fit(n, comparisons), bradley_terry_fit(n, relabelled)
    assert [moved[relabel[c]] for c in range(n)] == pytest.approx(original, abs=1e-9)


@pytest.mark.parametrize(
    "comparisons, message",
    [
        ([(0, 1, 1.5)], r"comparison 0: p_i_beats_j must be a probability in \[0, 1\], got 1.5"),
        ([(0, 1, 0.5), (2, 2, 0.5)], "comparison 1: candidate 2 is compared with itself"),
        ([(0, 3, 0.5)], r"comparison 0: candidate 3 is not in 0..2"),
        ([(0, 1)], r"comparison 0: expected \(i, j, p_i_beats_j\)"),
    ],
)
def test_bradley_terry_names_the_bad_comparison(comparisons, message):
    with pytest.raises(ValueError, match=message):
        bradley_terry_fit(3, comparisons)


def test_fits_refuse_a_zero_prior():
    with pytest.raises(ValueError, match="prior must be a positive precision"):
        bradley_terry_fit(2, [(0, 1, 1.0)], prior=0.0)


# --- Plackett-Luce ----------------------------------------------------------------------------------------------------


def _judge(truth, schedule, rng, noise):
    """A GQM-like judge: integer 0-10 scores, true quality plus noise, so ties happen."""
    return [
        {c: float(np.clip(np.round(truth[c] + rng.normal(0.0, noise)), 0, 10)) for c in group} for group in schedule
    ]


@pytest.mark.parametrize("seed", range(5))
def test_plackett_luce_recovers_known_strengths_from_noisy_subgroups(seed):
    n = 16
    rng = np.random.default_rng(seed)
    truth = np.linspace(1.0, 9.0, n)[rng.permutation(n)]
    judged = _judge(truth, subgroup_schedule(n, k=4, coverage=3, seed=seed), rng, noise=0.5)
    assert spearman(plackett_luce_fit(n, judged), truth) >= 0.9
    # The default schedule (coverage 2) through the full pipeline: scores on the 0-10 scale, same ranking.
    judged = _judge(truth, subgroup_schedule(n, seed=seed), rng, noise=0.5)
    assert spearman(fit_subgroup_scores(n, judged), truth) >= 0.9


def test_plackett_luce_on_pairs_is_bradley_terry_on_hard_outcomes():
    # A subgroup of two with a strict order is one PL choice = one BT comparison with outcome 1.
    subgroups = [{0: 8, 1: 3}, {1: 6, 2: 2}, {2: 7, 0: 4}, {0: 9, 2: 1}]
    comparisons = [(0, 1, 1.0), (1, 2, 1.0), (2, 0, 1.0), (0, 2, 1.0)]
    assert plackett_luce_fit(3, subgroups) == pytest.approx(bradley_terry_fit(3, comparisons), abs=1e-9)


def test_plackett_luce_all_ties_give_equal_strengths():
    assert plackett_luce_fit(6, [{0: 5, 1: 5, 2: 5, 3: 5}, {2: 5, 3: 5, 4: 5, 5: 5}]) == [0.0] * 6


def test_plackett_luce_stays_finite_under_perfect_separation():
    n, prior = 8, 0.1
    subgroups = [{c: 10 - c for c in group} for group in subgroup_schedule(n, seed=0)]  # lower index always better
    s = plackett_luce_fit(n, subgroups, prior=prior)
    assert all(math.isfinite(x) for x in s)
    # Every pair that shared a call keeps that call's order (pairs never compared may tie, e.g. by symmetry).
    for group in subgroups:
        for a, b in itertools.combinations(sorted(group), 2):
            assert s[a] > s[b]
    # At zero strengths each group of 4 has log-likelihood -log(4 * 3 * 2); the fit can only do better.
    assert sum(x * x for x in s) <= 2 * len(subgroups) * math.log(24) / prior


def test_plackett_luce_relabelling_candidates_permutes_the_strengths():
    subgroups = [{0: 9, 1: 6, 2: 6, 3: 2}, {2: 8, 3: 4, 4: 1, 5: 9}, {5: 3, 1: 7, 0: 7, 4: 0}]
    relabel = [4, 2, 5, 0, 3, 1]
    moved = plackett_luce_fit(6, [{relabel[c]: s for c, s in g.items()} for g in subgroups])
    assert [moved[relabel[c]] for c in range(6)] == pytest.approx(plackett_luce_fit(6, subgroups), abs=1e-9)


def test_plackett_luce_names_the_bad_subgroup():
    with pytest.raises(ValueError, match="subgroup 1: candidate 9 is not in 0..3"):
        plackett_luce_fit(4, [{0: 1, 1: 2}, {9: 3, 0: 1}])
    with pytest.raises(ValueError, match="subgroup 0: candidate 1 has a non-numeric score nan"):
        plackett_luce_fit(4, [{0: 1, 1: float("nan")}])


# --- back onto the 0-10 scale -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_a_group_judged_in_one_call_keeps_the_judges_own_scores(n):
    rng = np.random.default_rng(n)
    schedule = subgroup_schedule(n, k=4)
    assert schedule == [list(range(n))]
    scores = {c: int(rng.integers(0, 11)) for c in range(n)}
    assert fit_subgroup_scores(n, [scores]) == [scores[c] for c in range(n)]
    # Whatever strengths come in, one call's scores come out unchanged.
    assert strengths_to_scores(list(rng.normal(size=n)), [scores]) == [scores[c] for c in range(n)]


def test_mapped_scores_ignore_how_generous_each_call_was():
    # An additive judge: score = quality + an offset per call. Offsets change no order and no within-call gap, so
    # the fitted scores only move by the mean offset (by hand: a = mean over calls of the call mean, minus c * ...).
    n = 8
    rng = np.random.default_rng(1)
    quality = np.linspace(2.0, 8.0, n)[rng.permutation(n)]
    schedule = subgroup_schedule(n, seed=1)
    offsets = rng.uniform(-1.5, 1.5, len(schedule))
    fair = [{c: float(quality[c]) for c in group} for group in schedule]
    generous = [{c: float(quality[c] + offset) for c in group} for group, offset in zip(schedule, offsets)]
    shift = np.array(fit_subgroup_scores(n, generous)) - np.array(fit_subgroup_scores(n, fair))
    assert shift == pytest.approx(np.full(n, offsets.mean()), abs=1e-9)
    # And a consistent judge's scores come back within a point each (PL keeps the order, not the exact gaps).
    assert np.abs(np.array(fit_subgroup_scores(n, fair)) - quality).max() <= 1.0


def test_mapped_scores_correct_for_the_company_a_candidate_kept():
    # A consistent judge (score = quality) at n = 16: a candidate's mean deviation from its calls' means is biased
    # by who it met (about half a point on average here); the fitted company strength removes most of that bias.
    n, errors, naive_errors = 16, [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        quality = np.linspace(2.0, 8.0, n)[rng.permutation(n)]
        judged = [{c: float(quality[c]) for c in group} for group in subgroup_schedule(n, seed=seed)]
        call_means = [np.mean(list(g.values())) for g in judged]
        deviations = [[g[c] - m for g, m in zip(judged, call_means) if c in g] for c in range(n)]
        naive = [np.mean(d) + np.mean(call_means) for d in deviations]
        errors.append(np.abs(np.array(fit_subgroup_scores(n, judged)) - quality).mean())
        naive_errors.append(np.abs(np.array(naive) - quality).mean())
    assert np.mean(naive_errors) > 0.4  # the bias is real in this design
    assert np.mean(errors) <= 0.25


def test_mapped_scores_stay_on_the_0_to_10_scale():
    n = 9
    schedule = subgroup_schedule(n, seed=2)
    extreme = [{c: (10.0 if c < 3 else 0.0) for c in group} for group in schedule]
    scores = fit_subgroup_scores(n, extreme)
    assert all(0.0 <= x <= 10.0 for x in scores)
    assert min(scores[:3]) > max(scores[3:])


def test_mapped_scores_permute_with_the_candidates():
    n = 9
    rng = np.random.default_rng(5)
    judged = _judge(rng.uniform(1, 9, n), subgroup_schedule(n, seed=5), rng, noise=1.0)
    relabel = list(rng.permutation(n))
    moved = fit_subgroup_scores(n, [{int(relabel[c]): s for c, s in g.items()} for g in judged])
    assert [moved[relabel[c]] for c in range(n)] == pytest.approx(fit_subgroup_scores(n, judged), abs=1e-9)


def test_score_mapping_names_bad_scores_and_unjudged_candidates():
    with pytest.raises(ValueError, match=r"subgroup 1: candidate 2 has score 11.0 outside \[0.0, 10.0\]"):
        strengths_to_scores([0.0, 0.0, 0.0], [{0: 5, 1: 4}, {1: 3, 2: 11}])
    with pytest.raises(ValueError, match=r"candidates \[3\] appear in no subgroup"):
        strengths_to_scores([0.0] * 4, [{0: 5, 1: 4}, {1: 3, 2: 1}])


def test_win_rates_are_mean_probabilities_of_beating_the_others():
    # By hand: sigmoid(1) = 0.7310586, sigmoid(2) = 0.8807971.
    assert strengths_to_win_rates([1.0, 0.0, -1.0]) == pytest.approx(
        [(0.7310586 + 0.8807971) / 2, 0.5, (0.2689414 + 0.1192029) / 2], abs=1e-6
    )
    assert strengths_to_win_rates([0.3]) == [0.5]
    # Every pair's two probabilities add to 1, so the win rates always add to n / 2.
    assert sum(strengths_to_win_rates([2.0, -0.5, 0.1, 0.7, -3.0])) == pytest.approx(2.5)


# --- GQM subgroup schedules -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, coverage", [(4, 2), (4, 3), (3, 3), (5, 2)])
def test_subgroup_schedule_is_connected_covering_and_position_balanced(k, coverage):
    for n in range(k + 1, 33):
        for seed in range(4):
            schedule = subgroup_schedule(n, k=k, coverage=coverage, seed=seed)
            assert all(len(group) == k == len(set(group)) for group in schedule)
            assert is_connected(n, schedule)
            slot_counts = np.zeros((n, k), dtype=int)
            for group in schedule:
                for slot, c in enumerate(group):
                    slot_counts[c, slot] += 1
            assert slot_counts.sum(axis=1).min() >= coverage
            assert (slot_counts.max(axis=1) - slot_counts.min(axis=1)).max() <= 1, (n, seed)


def test_subgroup_calls_grow_linearly_with_the_group():
    # ceil(2 * n / 4) calls for n = 8, 16, 32: 4, 8, 16 (no extra subgroup was needed to connect these).
    for n, calls in [(8, 4), (16, 8), (32, 16)]:
        for seed in range(10):
            assert len(subgroup_schedule(n, k=4, coverage=2, seed=seed)) == calls


def test_subgroup_schedule_needs_two_appearances_to_connect():
    schedule = subgroup_schedule(8, k=4, coverage=1, seed=0)  # one appearance each would be two disjoint calls
    assert len(schedule) == 4 and is_connected(8, schedule)


def test_subgroup_schedule_depends_only_on_its_seed():
    assert subgroup_schedule(10, seed=7) == subgroup_schedule(10, seed=7)
    assert subgroup_schedule(10, seed=7) != subgroup_schedule(10, seed=8)


def test_subgroup_schedule_rejects_bad_sizes():
    with pytest.raises(ValueError, match="k .* must be at least 2, got 1"):
        subgroup_schedule(5, k=1)
    with pytest.raises(ValueError, match="coverage must be a positive integer, got 0"):
        subgroup_schedule(5, coverage=0)
    with pytest.raises(ValueError, match="group size must be a positive integer, got 0"):
        subgroup_schedule(0)

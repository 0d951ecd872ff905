"""Maths for scoring a group from many small judgements: comparison graphs, strength fits and the 0-10 mapping.

A pairwise judge (GRAM, GRAM-R²) compares two candidates; the GQM judge scores at most ``max_candidates_per_call``
candidates at once. To score a group of any size, the caller judges small pieces and this module puts them together:

- which pieces to judge: :func:`round_robin_pairs`, :func:`sampled_comparison_graph`, :func:`reference_pairs` for
  pairwise judges, :func:`subgroup_schedule` for GQM subgroups, :func:`candidate_orders` for a small group shown
  whole in several orders;
- one strength per candidate: :func:`bradley_terry_fit` (soft pairwise outcomes) and :func:`plackett_luce_fit`
  (scored subgroups, ties allowed);
- back onto a reward scale: :func:`strengths_to_win_rates` ([0, 1], comparable with a round-robin mean win
  probability) and :func:`strengths_to_scores` (the judge's own 0-10 scale; a single call returns the judge's scores
  unchanged). :func:`fit_subgroup_scores` chains the GQM steps.

Candidates are the integers ``0..n-1``. A pair ``(i, j)`` means "show ``i`` first (as A), ``j`` second (as B)".
Strengths are natural-log strengths with mean zero: ``P(i beats j) = sigmoid(s_i - s_j)``. Everything is pure:
no I/O, no model code; randomness comes only from the ``seed`` argument.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

Pair = tuple[int, int]
Comparison = tuple[int, int, float]
"""``(i, j, p)``: the judge says ``i`` beats ``j`` with probability ``p`` (1.0 a clear win, 0.5 a tie)."""
JudgedSubgroup = Mapping[int, float]
"""Scores one judge call gave a subgroup, ``{candidate: score}``, in the order the candidates were shown."""

DEFAULT_PRIOR = 0.1
"""Precision of the zero-mean Gaussian prior on log-strengths (a standard deviation of about 3.2).

Weak next to the data (one soft comparison carries up to 0.25), yet enough to keep perfect separation finite."""

_MAX_NEWTON_STEPS = 100
_TOLERANCE = 1e-10


def _check_size(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the group size must be a positive integer, got {n!r}")


def _check_candidate(index: object, n: int, where: str) -> int:
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not 0 <= index < n:
        raise ValueError(f"{where}: candidate {index!r} is not in 0..{n - 1}")
    return int(index)


def _closed_trails(num_vertices: int, edges: Sequence[Pair]) -> list[list[tuple[int, int]]]:
    """Split a graph whose degrees are all even into closed trails, each a list of ``(edge index, from vertex)``.

    Walking unused edges can only get stuck where the walk started, because every other vertex it enters has an
    unused edge left to leave by; so every vertex a trail passes through is entered and left the same number of
    times.
    """
    incident: list[list[int]] = [[] for _ in range(num_vertices)]
    for index, (i, j) in enumerate(edges):
        incident[i].append(index)
        incident[j].append(index)
    for edge_list in incident:
        edge_list.reverse()  # pop() then takes edges in the order given
    used = [False] * len(edges)
    trails = []
    for start in range(num_vertices):
        while True:
            trail: list[tuple[int, int]] = []
            vertex = start
            while True:
                while incident[vertex] and used[incident[vertex][-1]]:
                    incident[vertex].pop()
                if not incident[vertex]:
                    break
                index = incident[vertex].pop()
                used[index] = True
                trail.append((index, vertex))
                i, j = edges[index]
                vertex = j if vertex == i else i
            if vertex != start:
                raise ValueError("closed trails need every degree even")
            if not trail:
                break
            trails.append(trail)
    return trails


def _balanced_orientation(n: int, edges: Sequence[Pair]) -> list[Pair]:
    """Orient undirected edges so that each vertex is first in half its pairs, rounded either way.

    Joining every odd-degree vertex to one extra vertex makes all degrees even; orienting every edge along its
    closed trail then gives each vertex as many outgoing as incoming edges, and dropping the extra vertex leaves
    ``|first - second| <= 1`` for everyone.
    """
    degree = [0] * n
    for i, j in edges:
        degree[i] += 1
        degree[j] += 1
    all_edges = [tuple(edge) for edge in edges] + [(v, n) for v in range(n) if degree[v] % 2]
    oriented: dict[int, Pair] = {}
    for trail in _closed_trails(n + 1, all_edges):
        for index, vertex in trail:
            i, j = all_edges[index]
            oriented[index] = (vertex, j if vertex == i else i)
    return [oriented[index] for index in range(len(edges))]


def round_robin_pairs(n: int) -> list[Pair]:
    """All ``n (n - 1) / 2`` unordered pairs, each once, oriented so every candidate is first about half the time.

    Judge ``(j, i)`` as well for both orders; one order per pair keeps each candidate's A/B count within one.

    Example:
        >>> round_robin_pairs(3)
        [(0, 1), (2, 0), (1, 2)]
    """
    _check_size(n)
    return _balanced_orientation(n, list(itertools.combinations(range(n), 2)))


def reference_pairs(n: int, reference_index: int) -> list[Pair]:
    """Every other candidate against the group member ``reference_index``: ``n - 1`` pairs, candidate first.

    The reference itself is not compared with itself; a reward built on these pairs should give it 0.5. For a
    reference from outside the group (a dataset column), compare each candidate with it directly: there is no graph.

    Example:
        >>> reference_pairs(4, 2)
        [(0, 2), (1, 2), (3, 2)]
    """
    _check_size(n)
    reference_index = _check_candidate(reference_index, n, "reference_index")
    return [(i, reference_index) for i in range(n) if i != reference_index]


def default_num_pairs(n: int) -> int:
    """``round(n log2 n)`` pairs, at least a spanning tree and at most every pair.

    Example:
        >>> [default_num_pairs(n) for n in (2, 4, 8, 16, 32)]
        [1, 6, 24, 64, 160]
    """
    _check_size(n)
    all_pairs = n * (n - 1) // 2
    return min(all_pairs, max(n - 1, round(n * math.log2(n)))) if n > 1 else 0


def sampled_comparison_graph(n: int, seed: int | np.random.Generator = 0, num_pairs: int | None = None) -> list[Pair]:
    """A random connected comparison graph with ``num_pairs`` pairs (default :func:`default_num_pairs`).

    Construction: a random Hamiltonian path (connected, every candidate in one or two pairs), then extra pairs
    added one at a time between the candidates with the fewest pairs so far, random among equals; where that greedy
    step gets boxed in, an extra pair is moved from the busiest candidate to the least-used one. Guaranteed: the
    graph is connected, no pair repeats, and each candidate is first in half its pairs, rounded either way. Pair
    counts per candidate differ by at most one unless no extra pair can be moved (possible only close to a complete
    graph; the tests check n = 5..32 at the default size over 20 seeds). With ``num_pairs >= n (n-1)/2`` every pair
    is present. Judging each pair in both orders costs ``2 * num_pairs`` calls: 128 at n = 16, within the target of
    ``2.5 n log2 n = 160``.

    Example:
        >>> pairs = sampled_comparison_graph(16, seed=0)
        >>> len(pairs), len(set(map(frozenset, pairs)))
        (64, 64)
    """
    _check_size(n)
    all_pairs = n * (n - 1) // 2
    num_pairs = default_num_pairs(n) if num_pairs is None else num_pairs
    if not isinstance(num_pairs, (int, np.integer)) or num_pairs < n - 1:
        raise ValueError(f"num_pairs={num_pairs!r} cannot connect {n} candidates: it needs at least {n - 1}")
    num_pairs = min(int(num_pairs), all_pairs)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    edges = [(int(a), int(b)) for a, b in itertools.pairwise(order)]
    adjacent = np.eye(n, dtype=bool)
    for a, b in edges:
        adjacent[a, b] = adjacent[b, a] = True
    degree = adjacent.sum(axis=1) - 1
    tie_break = rng.random((n, n))
    while len(edges) < num_pairs:
        # Lexicographic: smallest larger degree, then smallest degree sum, then random.
        cost = np.maximum.outer(degree, degree) * 4.0 * n + np.add.outer(degree, degree) + tie_break
        cost[adjacent] = np.inf
        a, b = divmod(int(np.argmin(cost)), n)
        edges.append((a, b))
        adjacent[a, b] = adjacent[b, a] = True
        degree[a] += 1
        degree[b] += 1
    path = set(map(frozenset, edges[: n - 1]))
    # The greedy step can be boxed in (the least-used candidates already paired); move an extra pair's end from the
    # busiest candidate to the least-used one until counts differ by at most one. Path pairs stay: they connect.
    for _ in range(n * n):
        low, high = int(np.argmin(degree)), int(np.argmax(degree))
        if degree[high] - degree[low] <= 1:
            break
        movable = [
            index
            for index, (a, b) in enumerate(edges)
            if high in (a, b) and frozenset((a, b)) not in path and not adjacent[low, b if a == high else a]
        ]
        if not movable:
            break
        a, b = edges[movable[int(rng.integers(len(movable)))]]
        other = b if a == high else a
        edges.remove((a, b))
        edges.append((low, other))
        adjacent[high, other] = adjacent[other, high] = False
        adjacent[low, other] = adjacent[other, low] = True
        degree[high] -= 1
        degree[low] += 1
    return _balanced_orientation(n, edges)


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def _newton_map(n: int, objective) -> np.ndarray:
    """Maximise a concave log posterior with damped Newton steps; ``objective(theta)`` -> (value, grad, hessian)."""
    theta = np.zeros(n)
    value, grad, hess = objective(theta)
    for _ in range(_MAX_NEWTON_STEPS):
        step = np.linalg.solve(hess, grad)  # hess is the *negative* Hessian: positive definite thanks to the prior
        size = 1.0
        while True:
            candidate = theta + size * step
            new_value, new_grad, new_hess = objective(candidate)
            if new_value >= value - 1e-12 or size < 1e-6:
                break
            size /= 2
        theta, value, grad, hess = candidate, new_value, new_grad, new_hess
        if np.max(np.abs(size * step)) < _TOLERANCE:
            break
    return theta - theta.mean()


def _check_prior(prior: float) -> float:
    if not (isinstance(prior, (int, float)) and math.isfinite(prior) and prior > 0):
        raise ValueError(f"prior must be a positive precision, got {prior!r} (0 lets perfect separation diverge)")
    return float(prior)


def bradley_terry_fit(n: int, comparisons: Sequence[Comparison], prior: float = DEFAULT_PRIOR) -> list[float]:
    """Mean-zero log-strengths that best explain soft pairwise outcomes (Bradley-Terry, MAP with a Gaussian prior).

    Maximises ``sum p log sigmoid(s_i - s_j) + (1 - p) log sigmoid(s_j - s_i) - prior / 2 * sum s**2`` by Newton's
    method; the objective is strictly concave, so the answer is unique and finite even when every outcome is 0 or 1.
    Soft outcomes (a judge's win probability) count as fractional wins; ``p = 0.5`` is a tie. A pair may appear any
    number of times and in either order (e.g. both orders of a GRAM comparison). Candidates without comparisons
    get strength 0; a graph in several pieces is fitted, but strengths are only comparable within a piece.

    Example:
        >>> s = bradley_terry_fit(3, [(0, 1, 0.9), (1, 2, 0.7), (0, 2, 0.95)])
        >>> s[0] > s[1] > s[2], abs(sum(s)) < 1e-9
        (True, True)
    """
    _check_size(n)
    prior = _check_prior(prior)
    first, second, wins = [], [], []
    for row, comparison in enumerate(comparisons):
        if len(comparison) != 3:
            raise ValueError(f"comparison {row}: expected (i, j, p_i_beats_j), got {comparison!r}")
        i, j, p = comparison
        i = _check_candidate(i, n, f"comparison {row}")
        j = _check_candidate(j, n, f"comparison {row}")
        if i == j:
            raise ValueError(f"comparison {row}: candidate {i} is compared with itself")
        if not (isinstance(p, (int, float, np.floating)) and 0.0 <= p <= 1.0):
            raise ValueError(f"comparison {row}: p_i_beats_j must be a probability in [0, 1], got {p!r}")
        first.append(i)
        second.append(j)
        wins.append(float(p))
    i_idx, j_idx, p_arr = np.array(first, dtype=int), np.array(second, dtype=int), np.array(wins)

    def objective(theta: np.ndarray):
        margin = theta[i_idx] - theta[j_idx]
        value = float(np.sum(p_arr * _log_sigmoid(margin) + (1 - p_arr) * _log_sigmoid(-margin)))
        value -= prior / 2 * float(theta @ theta)
        predicted = 1.0 / (1.0 + np.exp(-margin))
        residual = p_arr - predicted
        grad = -prior * theta
        np.add.at(grad, i_idx, residual)
        np.add.at(grad, j_idx, -residual)
        weight = predicted * (1 - predicted)
        hess = prior * np.eye(n)  # negative Hessian: prior + weighted graph Laplacian
        np.add.at(hess, (i_idx, i_idx), weight)
        np.add.at(hess, (j_idx, j_idx), weight)
        np.add.at(hess, (i_idx, j_idx), -weight)
        np.add.at(hess, (j_idx, i_idx), -weight)
        return value, grad, hess

    return [float(s) for s in _newton_map(n, objective)]


def _check_subgroups(n: int, judged_subgroups: Sequence[JudgedSubgroup]) -> list[dict[int, float]]:
    checked = []
    for row, subgroup in enumerate(judged_subgroups):
        if not isinstance(subgroup, Mapping) or not subgroup:
            raise ValueError(f"subgroup {row}: expected a non-empty {{candidate: score}} mapping, got {subgroup!r}")
        scores = {}
        for candidate, score in subgroup.items():
            candidate = _check_candidate(candidate, n, f"subgroup {row}")
            if not (isinstance(score, (int, float, np.integer, np.floating)) and math.isfinite(score)):
                raise ValueError(f"subgroup {row}: candidate {candidate} has a non-numeric score {score!r}")
            scores[candidate] = float(score)
        checked.append(scores)
    return checked


def plackett_luce_fit(n: int, judged_subgroups: Sequence[JudgedSubgroup], prior: float = DEFAULT_PRIOR) -> list[float]:
    """Mean-zero log-strengths from scored subgroups (Plackett-Luce with Breslow ties, MAP with a Gaussian prior).

    Each subgroup's scores are read as a ranking, best first. Plackett-Luce picks the best, then the best of the
    rest, and so on: ``P = prod_k exp(s_top_k) / sum_{j still in} exp(s_j)``. Ties follow Breslow's rule from
    survival analysis: every member of a tied tier is "picked" from the same set (the tier and everything below),
    so a tie pulls the tied strengths together and an all-tied subgroup is exactly neutral. Only the order of the
    scores is used, not their gaps: judges disagree on what a gap of 2 means, they agree far more on the order.
    :func:`strengths_to_scores` brings the score gaps back. Chosen over Davidson-Luce (one more parameter, the tie
    propensity, to estimate from a handful of calls) and over breaking subgroups into pairs (which counts a
    subgroup of 4 as 6 independent comparisons and overweights it).

    Example:
        >>> s = plackett_luce_fit(5, [{0: 9, 1: 6, 2: 6, 3: 2}, {2: 8, 3: 4, 4: 1, 0: 9}])
        >>> s[0] > s[2] > s[3] > s[4], abs(s[1] - s[2]) < 1.0
        (True, True)
    """
    _check_size(n)
    prior = _check_prior(prior)
    events: list[tuple[int, np.ndarray]] = []  # (candidate picked, the set it was picked from)
    for scores in _check_subgroups(n, judged_subgroups):
        levels = sorted(set(scores.values()), reverse=True)
        for level in levels:
            remaining = np.array([c for c, score in scores.items() if score <= level], dtype=int)
            if len(remaining) < 2:
                continue  # picking the last one left says nothing
            events.extend((c, remaining) for c, score in scores.items() if score == level)

    def objective(theta: np.ndarray):
        value = -prior / 2 * float(theta @ theta)
        grad = -prior * theta
        hess = prior * np.eye(n)
        for picked, pool in events:
            local = theta[pool]
            log_total = float(np.logaddexp.reduce(local))
            share = np.exp(local - log_total)
            value += theta[picked] - log_total
            grad[picked] += 1.0
            grad[pool] -= share
            hess[np.ix_(pool, pool)] += np.diag(share) - np.outer(share, share)
        return value, grad, hess

    return [float(s) for s in _newton_map(n, objective)]


def strengths_to_win_rates(strengths: Sequence[float]) -> list[float]:
    """Each candidate's mean probability of beating another group member: ``mean_{j != i} sigmoid(s_i - s_j)``.

    On the same [0, 1] scale as a round-robin mean win probability, so rewards mean the same whichever pairwise
    scheme produced them. A lone candidate gets 0.5.

    Example:
        >>> [round(x, 3) for x in strengths_to_win_rates([1.0, 0.0, -1.0])]
        [0.806, 0.5, 0.194]
    """
    s = np.asarray(strengths, dtype=float)
    if s.ndim != 1 or not len(s) or not np.all(np.isfinite(s)):
        raise ValueError(f"strengths must be a non-empty list of finite numbers, got {strengths!r}")
    if len(s) == 1:
        return [0.5]
    p = 1.0 / (1.0 + np.exp(-(s[:, None] - s[None, :])))
    np.fill_diagonal(p, 0.0)
    return [float(x) for x in p.sum(axis=1) / (len(s) - 1)]


def strengths_to_scores(
    strengths: Sequence[float],
    judged_subgroups: Sequence[JudgedSubgroup],
    low: float = 0.0,
    high: float = 10.0,
) -> list[float]:
    """Put fitted strengths back on the judge's own score scale, calibrated by the raw subgroup scores.

    Model: the score candidate ``i`` got in subgroup ``g`` is ``a + c * s_i + b_g + noise``, where ``b_g`` is how
    generous that one call was (a GQM judge scores relative to the company, so a subgroup of strong candidates
    tends to get lower scores). ``c`` is the within-subgroup least-squares slope of scores on strengths (clamped at
    0), ``b_g = mean_g(score) - a - c * mean_g(s)``, and ``a`` makes the ``b_g`` average zero, i.e. describes an
    average call. The result is each candidate's raw scores with its calls' generosity removed::

        score_i = a + mean over i's subgroups g of (score_gi - mean_g(score) + c * mean_g(s))

    clipped to ``[low, high]``. Only the strengths of each subgroup's *company* enter, so a single call covering
    the whole group returns the judge's scores unchanged (groups of 4 or fewer keep one call and the same rewards),
    and a candidate that appears in several calls gets the mean of its generosity-corrected scores.

    Example:
        >>> strengths_to_scores([0.4, -0.1, -0.3], [{0: 8, 1: 5, 2: 3}])
        [8.0, 5.0, 3.0]
    """
    s = np.asarray(strengths, dtype=float)
    if s.ndim != 1 or not len(s) or not np.all(np.isfinite(s)):
        raise ValueError(f"strengths must be a non-empty list of finite numbers, got {strengths!r}")
    n = len(s)
    subgroups = _check_subgroups(n, judged_subgroups)
    for row, scores in enumerate(subgroups):
        for candidate, score in scores.items():
            if not low <= score <= high:
                raise ValueError(f"subgroup {row}: candidate {candidate} has score {score} outside [{low}, {high}]")
    seen = {c for scores in subgroups for c in scores}
    if len(seen) != n:
        raise ValueError(f"candidates {sorted(set(range(n)) - seen)} appear in no subgroup, so they have no score")
    if len(subgroups) == 1:
        # One call for the whole group: its scores are the answer, bit for bit.
        return [subgroups[0][c] for c in range(n)]
    s = s - s.mean()
    covariance = variance = 0.0
    for scores in subgroups:
        members = list(scores)
        raw = np.array([scores[c] for c in members])
        centred = s[members] - s[members].mean()
        covariance += float(centred @ (raw - raw.mean()))
        variance += float(centred @ centred)
    slope = max(covariance / variance, 0.0) if variance > 1e-12 else 0.0
    level = float(np.mean([np.mean(list(sc.values())) - slope * s[list(sc)].mean() for sc in subgroups]))
    total = np.zeros(n)
    count = np.zeros(n)
    for scores in subgroups:
        members = list(scores)
        company = slope * s[members].mean()
        mean_score = float(np.mean([scores[c] for c in members]))
        for c in members:
            total[c] += scores[c] - mean_score + company
            count[c] += 1
    return [float(x) for x in np.clip(level + total / count, low, high)]


def subgroups_connected(n: int, subgroups: Sequence[Sequence[int]]) -> bool:
    """Whether the subgroups cover all of ``0..n-1`` and chain them into one piece (shared members link subgroups).

    Example:
        >>> subgroups_connected(4, [[0, 1], [1, 2, 3]]), subgroups_connected(4, [[0, 1], [2, 3]])
        (True, False)
    """
    parent = list(range(n))

    def root(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    covered: set[int] = set()
    for members in subgroups:
        covered.update(members)
        for other in members[1:]:
            parent[root(other)] = root(members[0])
    return len(covered) == n and len({root(v) for v in range(n)}) == 1


def subgroup_schedule(n: int, k: int = 4, coverage: int = 2, seed: int | np.random.Generator = 0) -> list[list[int]]:
    """Overlapping subgroups of at most ``k`` candidates for a judge that scores ``k`` at a time; slot order.

    ``n <= k``: exactly one subgroup, ``[0, 1, ..., n-1]``. Otherwise ``ceil(coverage * n / k)`` subgroups of
    exactly ``k`` distinct candidates, plus one more for each time the co-appearance graph is still in pieces
    (each such subgroup joins up to ``k`` pieces; rarely needed at ``coverage >= 2``). Guaranteed for ``n > k``:

    - connected: any two candidates are linked by a chain of shared subgroups;
    - coverage: every candidate appears at least ``max(coverage, 2)`` times (one appearance each would split the
      group into disjoint calls), and appearance counts differ by at most one before any joining subgroup;
    - positions: each candidate's counts per slot (A, B, C, D, ...) differ by at most one. Slots are an edge
      colouring of the subgroup-candidate graph, which is bipartite, so an equitable colouring exists (de Werra)
      and is reached by re-colouring two slots at a time along closed trails.

    Members are drawn from the least-used candidates, preferring ones that have shared few subgroups with those
    already drawn, random among equals.

    Example:
        >>> subgroup_schedule(3)
        [[0, 1, 2]]
        >>> len(subgroup_schedule(16, k=4, coverage=2))
        8
    """
    _check_size(n)
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k (candidates per call) must be at least 2, got {k!r}")
    if not isinstance(coverage, (int, np.integer)) or coverage < 1:
        raise ValueError(f"coverage must be a positive integer, got {coverage!r}")
    if n <= k:
        return [list(range(n))]
    k = int(k)
    rng = np.random.default_rng(seed)
    appearances = np.zeros(n, dtype=int)
    together = np.zeros((n, n), dtype=int)
    parent = list(range(n))

    def root(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    def draw(required: list[int]) -> list[int]:
        members = list(required)
        while len(members) < k:
            # Least-used first, then fewest shared subgroups with those already drawn, then random.
            score = appearances * (k * n * n) + together[:, members].sum(axis=1) * n + rng.random(n)
            score[members] = np.inf
            members.append(int(np.argmin(score)))
        appearances[members] += 1
        for a, b in itertools.combinations(members, 2):
            together[a, b] += 1
            together[b, a] += 1
            parent[root(a)] = root(b)
        return members

    schedule = [draw([]) for _ in range(math.ceil(max(int(coverage), 2) * n / k))]
    while True:
        pieces: dict[int, list[int]] = {}
        for v in range(n):
            pieces.setdefault(root(v), []).append(v)
        if len(pieces) == 1:
            return _equitable_slots(schedule, n, k)
        # One least-used representative from each of up to k pieces, topped up to k members.
        representatives = [min(group, key=lambda v: (appearances[v], rng.random())) for group in pieces.values()]
        schedule.append(draw(representatives[:k]))


def candidate_orders(n: int, count: int = 1) -> list[list[int]]:
    """``count`` orders in which to show all ``n`` candidates of a group, in slot order: the stored order, its
    reverse, then each rotation of the stored order followed by its reverse.

    With an even ``count`` every candidate's mean slot is the middle one, so a judge's preference that grows or
    falls along the slots (A over D, say) adds the same to every candidate's mean score. No order repeats while
    distinct ones are left (``n = 2`` has two); after that the list starts again from the stored order.

    Example:
        >>> candidate_orders(4, 4)
        [[0, 1, 2, 3], [3, 2, 1, 0], [1, 2, 3, 0], [0, 3, 2, 1]]
        >>> candidate_orders(2, 3)
        [[0, 1], [1, 0], [0, 1]]
    """
    _check_size(n)
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count (orders) must be a positive integer, got {count!r}")
    distinct: list[list[int]] = []
    for shift in range(n):
        rotated = [*range(shift, n), *range(shift)]
        for order in (rotated, rotated[::-1]):
            if order not in distinct:
                distinct.append(order)
    return [list(distinct[i % len(distinct)]) for i in range(count)]


def _equitable_slots(schedule: list[list[int]], n: int, k: int) -> list[list[int]]:
    """Reorder each subgroup so that every candidate's slot counts differ by at most one.

    A slot is a colour on the edge (subgroup, candidate). While some candidate has slot ``a`` at least twice more
    than slot ``b``, the edges coloured ``a`` or ``b`` are re-coloured alternately along closed trails; the graph is
    bipartite, so the trails have even length and every vertex ends up with as many ``a`` as ``b``, give or take
    one. A subgroup keeps one of each, and ``sum(counts ** 2)`` drops each round, so the loop ends.
    """
    num_groups = len(schedule)
    edges = [(g, c) for g, members in enumerate(schedule) for c in members]
    colour = [slot for members in schedule for slot in range(len(members))]
    counts = np.zeros((n, k), dtype=int)
    for (_, c), slot in zip(edges, colour):
        counts[c, slot] += 1
    while True:
        spread = counts.max(axis=1) - counts.min(axis=1)
        c = int(np.argmax(spread))
        if spread[c] <= 1:
            break
        a, b = int(np.argmax(counts[c])), int(np.argmin(counts[c]))
        chosen = [index for index, slot in enumerate(colour) if slot in (a, b)]
        # Vertices: subgroups 0..G-1 and a spare on their side (G + n); candidates G..G+n-1 and a spare (G + n + 1).
        left_spare, right_spare = num_groups + n, num_groups + n + 1
        trail_edges = [(edges[index][0], num_groups + edges[index][1]) for index in chosen]
        degree = np.zeros(num_groups + n + 2, dtype=int)
        for u, v in trail_edges:
            degree[u] += 1
            degree[v] += 1
        trail_edges += [(u, right_spare) for u in range(num_groups) if degree[u] % 2]
        trail_edges += [(left_spare, v) for v in range(num_groups, num_groups + n) if degree[v] % 2]
        if sum(degree[u] % 2 for u in range(num_groups)) % 2:  # then both spares have odd degree
            trail_edges.append((left_spare, right_spare))
        for trail in _closed_trails(num_groups + n + 2, trail_edges):
            for step, (edge, _) in enumerate(trail):
                if edge < len(chosen):
                    index = chosen[edge]
                    counts[edges[index][1], colour[index]] -= 1
                    colour[index] = a if step % 2 == 0 else b
                    counts[edges[index][1], colour[index]] += 1
    ordered = [[0] * len(members) for members in schedule]
    for (g, c), slot in zip(edges, colour):
        ordered[g][slot] = c
    return ordered


def fit_subgroup_scores(
    n: int,
    judged_subgroups: Sequence[JudgedSubgroup],
    prior: float = DEFAULT_PRIOR,
    low: float = 0.0,
    high: float = 10.0,
) -> list[float]:
    """One 0-10 score per candidate from scored subgroups: :func:`plackett_luce_fit`, then :func:`strengths_to_scores`.

    Example:
        >>> fit_subgroup_scores(4, [{0: 7, 1: 3, 2: 9, 3: 3}])
        [7.0, 3.0, 9.0, 3.0]
    """
    return strengths_to_scores(plackett_luce_fit(n, judged_subgroups, prior), judged_subgroups, low, high)

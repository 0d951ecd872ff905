"""Ranking maths shared by the reward function, the judge-training reward and judge evaluation.

A *ranking* is a list of tiers, best first; each tier lists candidate ids that tie, e.g. ``[["A"], ["B", "C"]]``,
written ``A > B = C``. Scores are ``{id: int}``; higher is better.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

Ranking = list[list[str]]

_RANKING_RE = re.compile(r"^[A-Z](?:\s*[>=]\s*[A-Z])*$")


def scores_to_ranking(scores: Mapping[str, float]) -> Ranking:
    """Tiers implied by scores: best first, ties together, ids alphabetical inside a tier.

    Example:
        >>> scores_to_ranking({"A": 8, "B": 3, "C": 8})
        [['A', 'C'], ['B']]
    """
    tiers: Ranking = []
    last = None
    for cid, score in sorted(scores.items(), key=lambda item: (-item[1], item[0])):
        if tiers and score == last:
            tiers[-1].append(cid)
        else:
            tiers.append([cid])
        last = score
    return tiers


def format_ranking(tiers: Sequence[Sequence[str]]) -> str:
    """Write tiers the way GRRM does.

    Example:
        >>> format_ranking([["A", "C"], ["B"]])
        'A = C > B'
    """
    return " > ".join(" = ".join(tier) for tier in tiers)


def parse_ranking(text: str) -> Ranking:
    """Parse ``A > C = B`` into tiers. Raises ``ValueError`` on anything else (including repeated ids).

    Example:
        >>> parse_ranking("A > C = B")
        [['A'], ['C', 'B']]
    """
    text = text.strip()
    if not _RANKING_RE.match(text):
        raise ValueError(f"not a ranking: {text!r}")
    tiers = [[cid.strip() for cid in tier.split("=")] for tier in text.split(">")]
    ids = [cid for tier in tiers for cid in tier]
    if len(ids) != len(set(ids)):
        raise ValueError(f"ranking repeats a candidate: {text!r}")
    return tiers


def ranking_positions(tiers: Sequence[Sequence[str]]) -> dict[str, int]:
    """Map each id to its tier index (0 = best)."""
    return {cid: level for level, tier in enumerate(tiers) for cid in tier}


def _relation(a: float, b: float) -> int:
    return (a > b) - (a < b)


def pairwise_relations(scores: Mapping[str, float]) -> dict[tuple[str, str], int]:
    """For every unordered pair ``(x, y)`` with ``x < y``: +1 if x is better, -1 if worse, 0 for a tie."""
    return {(x, y): _relation(scores[x], scores[y]) for x, y in itertools.combinations(sorted(scores), 2)}


def ranking_agrees_with_scores(tiers: Sequence[Sequence[str]], scores: Mapping[str, float]) -> bool:
    """True when the ranking names exactly the scored ids and orders every pair as the scores do, ties included.

    Example:
        >>> ranking_agrees_with_scores([["A"], ["B", "C"]], {"A": 9, "B": 4, "C": 4})
        True
        >>> ranking_agrees_with_scores([["A"], ["B"], ["C"]], {"A": 9, "B": 4, "C": 4})
        False
    """
    positions = ranking_positions(tiers)
    if set(positions) != set(scores):
        return False
    # A better tier has a lower index, so compare negated positions.
    as_scores = {cid: -level for cid, level in positions.items()}
    return pairwise_relations(as_scores) == pairwise_relations(scores)


def pairwise_ranking_accuracy(
    predicted: Mapping[str, float], truth: Mapping[str, float], tie_credit: float = 0.0
) -> float:
    """Share of candidate pairs whose relation (better / worse / tie) matches the truth.

    Ties are a class of their own, as in the GRRM paper: a predicted strict order against a true tie is wrong, and
    so is a predicted tie against a true strict order; ``tie_credit`` (e.g. 0.5) gives those pairs partial credit
    instead. A reversed strict order always earns 0.

    Example:
        >>> pairwise_ranking_accuracy({"A": 8, "B": 3, "C": 5}, {"A": 9, "B": 1, "C": 1})
        0.6666666666666666
        >>> pairwise_ranking_accuracy({"A": 8, "B": 3, "C": 5}, {"A": 9, "B": 1, "C": 1}, tie_credit=0.5)
        0.8333333333333334
    """
    if set(predicted) != set(truth):
        raise ValueError(f"candidate ids differ: {sorted(predicted)} vs {sorted(truth)}")
    truth_rel = pairwise_relations(truth)
    if not truth_rel:
        raise ValueError("need at least two candidates")
    pred_rel = pairwise_relations(predicted)
    credit = 0.0
    for pair, rel in truth_rel.items():
        if pred_rel[pair] == rel:
            credit += 1.0
        elif pred_rel[pair] == 0 or rel == 0:
            credit += tie_credit
    return credit / len(truth_rel)


DEFAULT_GAP_ERROR_CREDIT: dict[int, float] = {0: 1.0, 1: 0.6, 2: 0.2}


def score_gap_agreement(
    predicted: Mapping[str, float],
    truth: Mapping[str, float],
    gap_error_credit: Mapping[int, float] = DEFAULT_GAP_ERROR_CREDIT,
) -> float:
    """Mean credit over pairs for how well predicted score gaps match true gaps.

    For a pair (x, y) the error is ``|(t_x - t_y) - (p_x - p_y)|``; an error of 0/1/2 earns 1/0.6/0.2 by default
    and larger errors earn 0. The term is shift-invariant: it never looks at absolute score levels.

    Example:
        >>> score_gap_agreement({"A": 10, "B": 5}, {"A": 8, "B": 3})
        1.0
        >>> score_gap_agreement({"A": 8, "B": 4}, {"A": 8, "B": 3})
        0.6
    """
    if set(predicted) != set(truth):
        raise ValueError(f"candidate ids differ: {sorted(predicted)} vs {sorted(truth)}")
    pairs = list(itertools.combinations(sorted(truth), 2))
    if not pairs:
        raise ValueError("need at least two candidates")
    total = 0.0
    for x, y in pairs:
        error = abs((truth[x] - truth[y]) - (predicted[x] - predicted[y]))
        total += gap_error_credit.get(int(error), 0.0) if float(error).is_integer() else 0.0
    return total / len(pairs)


def tie_rate(scores: Mapping[str, float]) -> float:
    """Share of candidate pairs with equal scores (0.0 for fewer than two candidates)."""
    relations = pairwise_relations(scores)
    return sum(rel == 0 for rel in relations.values()) / len(relations) if relations else 0.0

"""Datasets for training the GRRM judge: SFT conversations and RLVR prompts with verifiable ground truth.

Both builders read a *ranking dataset*: a :class:`datasets.Dataset` with columns ``src_text``, ``src_lang``,
``trg_lang``, ``mt_texts`` (list of candidate translations), ``scores`` (one integer 0-10 per candidate, higher is
better) and, for SFT, ``analysis`` (the annotator's comparative analysis, without the final ranking and scores),
e.g. ``double7/TowerBlocks-MT-Ranking``.

A group that shows the same translation twice with different scores has no consistent ground truth: the judge
sees two identical candidates and would be taught to score them apart. Both builders drop such rows (merging would
invent a label, and the SFT analysis refers to the letters as stored) and warn once with their count and indices.
Identical candidates with equal scores are fine and kept.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from datasets import Dataset, Features, List, Value

from ..formats.gqm import CANDIDATE_IDS, MAX_SCORE, MIN_SCORE, build_gqm_prompt, format_gqm_answer

_MESSAGE = {"role": Value("string"), "content": Value("string")}

SFT_FEATURES = Features({"messages": List(_MESSAGE)})
"""Columns of :func:`build_judge_sft_dataset`."""

RLVR_FEATURES = Features(
    {
        "prompt": List(_MESSAGE),
        "ground_truth": Value("string"),
        "src_lang": Value("string"),
        "trg_lang": Value("string"),
        "order": List(Value("int32")),
        "source_index": Value("int64"),
        "augmentation": Value("string"),
    }
)
"""Columns of :func:`build_judge_rlvr_dataset`."""

_GROUP_COLUMNS = ("src_text", "src_lang", "trg_lang", "mt_texts", "scores")

# Exhaustive subgroup enumeration costs 2**n; beyond this size subsets are drawn by rejection sampling instead.
_MAX_ENUMERATED_GROUP = 12

_HEADER_WORD_RE = re.compile(r"\b(?:scores?|scoring|rankings?|ranks?)\b", re.I)
_WHOLE_BOLD_RE = re.compile(r"^(\*\*|__)[^*_]+\1:?$")


def _is_dangling_header(line: str) -> bool:
    stripped = line.strip()
    core = stripped.lstrip("#").strip().strip("*_").strip()
    if not _HEADER_WORD_RE.search(core):
        return False
    # Only header-shaped lines go: a heading, a line that is one bold span, or a lead-in ending in a colon. A last
    # sentence that merely mentions a score ("B's score should be low.") is analysis and stays.
    return stripped.startswith("#") or bool(_WHOLE_BOLD_RE.match(stripped)) or core.endswith(":")


def clean_analysis(analysis: str) -> str:
    """Strip an annotator analysis and drop a dangling last line that announces scores or a ranking.

    Annotations were cut right before the score line, so some end in a header such as ``**Final Scores:**`` that
    would otherwise sit, empty, right above the ``### Final Ranking:`` section the SFT target appends.

    Example:
        >>> clean_analysis("A is fluent; B is literal.\\n\\n**Final Scores:**\\n")
        'A is fluent; B is literal.'
        >>> clean_analysis("A is fluent.\\nB's score should be low: it is literal.")
        "A is fluent.\\nB's score should be low: it is literal."
    """
    lines = analysis.strip().splitlines()
    if lines and _is_dangling_header(lines[-1]):
        lines = lines[:-1]
    return "\n".join(lines).strip()


def _check_columns(ds: Dataset, columns: Sequence[str]) -> None:
    missing = [column for column in columns if column not in ds.column_names]
    if missing:
        raise ValueError(f"the ranking dataset lacks column(s) {missing}; it has {ds.column_names}")


def _check_group(mt_texts: Sequence[str], scores: Sequence[Any], index: int) -> list[int]:
    if len(mt_texts) != len(scores):
        raise ValueError(f"row {index}: {len(mt_texts)} candidates but {len(scores)} scores")
    if not 2 <= len(mt_texts) <= len(CANDIDATE_IDS):
        raise ValueError(f"row {index}: a group needs 2 to {len(CANDIDATE_IDS)} candidates, got {len(mt_texts)}")
    checked: list[int] = []
    for score in scores:
        # Training targets must be on the judge's own scale; a float or out-of-range label is a data bug that would
        # otherwise surface as an unreachable reward or an unparsable SFT answer.
        if isinstance(score, bool) or not isinstance(score, numbers.Real) or not float(score).is_integer():
            raise ValueError(f"row {index}: scores must be integers, got {list(scores)}")
        if not MIN_SCORE <= score <= MAX_SCORE:
            raise ValueError(f"row {index}: scores must lie in {MIN_SCORE}-{MAX_SCORE}, got {list(scores)}")
        checked.append(int(score))
    return checked


def _contradicting_duplicates(mt_texts: Sequence[str], scores: Sequence[int]) -> list[str]:
    """Texts that appear more than once in a group with different scores."""
    scores_by_text: dict[str, set[int]] = {}
    for text, score in zip(mt_texts, scores):
        scores_by_text.setdefault(text, set()).add(score)
    return [text for text, seen in scores_by_text.items() if len(seen) > 1]


def _warn_contradictions(dropped: list[int], total: int) -> None:
    if dropped:
        shown = ", ".join(map(str, dropped[:20])) + (", ..." if len(dropped) > 20 else "")
        warnings.warn(
            f"dropped {len(dropped)} of {total} ranking rows whose group shows the same translation with different "
            f"scores (contradicting ground truth): rows {shown}",
            UserWarning,
            stacklevel=3,
        )


def arrange_group(
    mt_texts: Sequence[str], scores: Sequence[int], order: Sequence[int]
) -> tuple[list[str], dict[str, int]]:
    """Lay out a (sub)group: letter ``CANDIDATE_IDS[i]`` shows original candidate ``order[i]`` with its score.

    Example:
        >>> arrange_group(["good", "bad", "ok"], [8, 3, 5], [2, 0])
        (['ok', 'good'], {'A': 5, 'B': 8})
    """
    texts = [mt_texts[original] for original in order]
    truth = {CANDIDATE_IDS[position]: int(scores[original]) for position, original in enumerate(order)}
    return texts, truth


def build_judge_sft_dataset(
    ds: Dataset,
    *,
    missing_analysis: Literal["skip", "error"] = "skip",
    language_names: Mapping[str, str] | None = None,
) -> Dataset:
    """Conversations for the judge's SFT cold start (TRL ``SFTTrainer``), one per group, candidates in stored order.

    The assistant turn is the cleaned analysis (:func:`clean_analysis`) followed by the ranking and scores derived
    from the labels. Candidates are not shuffled: the analysis refers to them by letter. Rows whose analysis is
    missing or empty are skipped, or raise with ``missing_analysis="error"``. Rows with contradicting duplicate
    candidates are dropped with a warning (see the module docstring).

    Example:
        >>> ds = Dataset.from_dict({"src_text": ["Hi."], "src_lang": ["en"], "trg_lang": ["fr"],
        ...     "mt_texts": [["Salut.", "Bonjour."]], "scores": [[7, 9]], "analysis": ["B is more polite."]})
        >>> print(build_judge_sft_dataset(ds)[0]["messages"][1]["content"])
        B is more polite.
        <BLANKLINE>
        ### Final Ranking:
        <BLANKLINE>
        B > A
        <BLANKLINE>
        ### Scores:
        <BLANKLINE>
        B: 9, A: 7
        <BLANKLINE>
    """
    if missing_analysis not in ("skip", "error"):
        raise ValueError(f"missing_analysis must be 'skip' or 'error', got {missing_analysis!r}")
    # Without the column every row would be skipped, which is never what the caller meant.
    _check_columns(ds, (*_GROUP_COLUMNS, "analysis"))
    messages: list[list[dict[str, str]]] = []
    contradicting: list[int] = []
    for index, row in enumerate(ds):
        scores = _check_group(row["mt_texts"], row["scores"], index)
        if _contradicting_duplicates(row["mt_texts"], scores):
            contradicting.append(index)
            continue
        analysis = clean_analysis(row["analysis"] or "")
        if not analysis:
            if missing_analysis == "error":
                raise ValueError(f"row {index} has no analysis")
            continue
        prompt = build_gqm_prompt(
            row["src_text"], row["mt_texts"], row["src_lang"], row["trg_lang"], language_names=language_names
        )
        _, truth = arrange_group(row["mt_texts"], scores, range(len(scores)))
        messages.append(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": format_gqm_answer(analysis, truth)}]
        )
    _warn_contradictions(contradicting, len(ds))
    return Dataset.from_dict({"messages": messages}, features=SFT_FEATURES)


def _distinct_arrangements(keys: Sequence[Any]) -> int:
    count = math.factorial(len(keys))
    for multiplicity in Counter(keys).values():
        count //= math.factorial(multiplicity)
    return count


def _sample_shuffles(rng: np.random.Generator, group: Sequence[int], keys: Sequence[Any], count: int) -> list[tuple]:
    """Up to ``count`` orders of ``group`` that look different from it and from each other.

    Candidates are compared by (text, score): swapping two identical candidates shows the judge nothing new, so it
    neither counts as a new order nor spends the budget. Stops early once every distinct arrangement is used.
    """
    contents = [keys[original] for original in group]
    target = min(count, _distinct_arrangements(contents) - 1)
    seen = {tuple(contents)}
    orders: list[tuple] = []
    while len(orders) < target:
        permutation = rng.permutation(len(group))
        arrangement = tuple(contents[p] for p in permutation)
        if arrangement in seen:
            continue
        seen.add(arrangement)
        orders.append(tuple(group[p] for p in permutation))
    return orders


def _sample_subgroups(rng: np.random.Generator, keys: Sequence[Any], count: int) -> list[tuple]:
    """Up to ``count`` proper subgroups (size 2..n-1, original order kept), uniform over distinct-looking subsets."""
    n = len(keys)
    if n <= 2 or count <= 0:
        return []
    if n <= _MAX_ENUMERATED_GROUP:
        candidates: list[tuple] = []
        seen: set[tuple] = set()
        for size in range(2, n):
            for subset in itertools.combinations(range(n), size):
                content = tuple(keys[i] for i in subset)
                if content not in seen:
                    seen.add(content)
                    candidates.append(subset)
        picks = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
        return [candidates[i] for i in picks]
    # 2**n subsets are too many to list; a fair coin per candidate is uniform over subsets, and with this many
    # subsets collisions are rare, so the attempt cap only guards against pathological duplicate-heavy groups.
    subsets: list[tuple] = []
    seen_content: set[tuple] = set()
    for _ in range(100 * count + 1000):
        if len(subsets) == count:
            break
        subset = tuple(int(i) for i in np.flatnonzero(rng.random(n) < 0.5))
        content = tuple(keys[i] for i in subset)
        if 2 <= len(subset) < n and content not in seen_content:
            seen_content.add(content)
            subsets.append(subset)
    return subsets


def build_judge_rlvr_dataset(
    ds: Dataset,
    *,
    shuffle_augment: int = 4,
    subgroup_augment: int = 4,
    seed: int = 0,
    language_names: Mapping[str, str] | None = None,
) -> Dataset:
    """Judge RLVR prompts with verifiable ground truth, augmented by candidate shuffles and subgroups.

    Per input row: the group in stored order, plus up to ``subgroup_augment`` proper subgroups (sizes 2..n-1,
    drawn uniformly, original order and absolute scores kept); each of these appears in stored order plus up to
    ``shuffle_augment`` further orders (never the stored one, never twice; fewer when the group has fewer
    arrangements). Candidates with the same text and score count as one when telling orders or subgroups apart,
    and an identical (prompt, ground truth) pair is emitted only once across the whole dataset; a row that shows the
    same text with different scores is dropped with a warning (see the module docstring). Defaults follow the
    GRRM training recipe; use ``0, 0`` for an evaluation set.

    Columns: ``prompt`` (one user turn), ``ground_truth`` (JSON ``{"A": score, ...}`` for the letters as shown),
    ``src_lang``, ``trg_lang``, ``order`` (``order[i]`` = index in the input row's ``mt_texts`` of the candidate
    shown as letter ``i``), ``source_index`` (input row) and ``augmentation`` (``original``, ``shuffle``,
    ``subgroup`` or ``subgroup+shuffle``). Rows are grouped by source; shuffle them for training as needed.

    Draws come from ``numpy.random.default_rng([seed, row_index])``: reproducible, independent of global state,
    and a row's augmentations do not depend on the rows before it.

    Example:
        >>> ds = Dataset.from_dict({"src_text": ["Hi."], "src_lang": ["en"], "trg_lang": ["fr"],
        ...     "mt_texts": [["Salut.", "Bonjour."]], "scores": [[7, 9]]})
        >>> rows = build_judge_rlvr_dataset(ds)
        >>> rows[:]["ground_truth"], rows[:]["order"], rows[:]["augmentation"]
        (['{"A": 7, "B": 9}', '{"A": 9, "B": 7}'], [[0, 1], [1, 0]], ['original', 'shuffle'])
    """
    for name, value in (("shuffle_augment", shuffle_augment), ("subgroup_augment", subgroup_augment), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    _check_columns(ds, _GROUP_COLUMNS)
    columns: dict[str, list[Any]] = {name: [] for name in RLVR_FEATURES}
    # Digests, not the prompts themselves, so deduplicating a large set does not hold every prompt twice in memory.
    emitted: set[bytes] = set()
    contradicting: list[int] = []
    for index, row in enumerate(ds.select_columns(list(_GROUP_COLUMNS))):
        mt_texts = list(row["mt_texts"])
        scores = _check_group(mt_texts, row["scores"], index)
        if _contradicting_duplicates(mt_texts, scores):
            contradicting.append(index)
            continue
        keys = list(zip(mt_texts, scores))
        rng = np.random.default_rng([seed, index])
        groups = [tuple(range(len(mt_texts)))] + _sample_subgroups(rng, keys, subgroup_augment)
        for group_number, group in enumerate(groups):
            orders = [group] + _sample_shuffles(rng, group, keys, shuffle_augment)
            for order_number, order in enumerate(orders):
                texts, truth = arrange_group(mt_texts, scores, order)
                prompt = build_gqm_prompt(
                    row["src_text"], texts, row["src_lang"], row["trg_lang"], language_names=language_names
                )
                ground_truth = json.dumps(truth)
                digest = hashlib.blake2b(f"{prompt}\0{ground_truth}".encode(), digest_size=16).digest()
                if digest in emitted:
                    continue
                emitted.add(digest)
                kind = ["original", "shuffle", "subgroup", "subgroup+shuffle"][
                    2 * (group_number > 0) + (order_number > 0)
                ]
                columns["prompt"].append([{"role": "user", "content": prompt}])
                columns["ground_truth"].append(ground_truth)
                columns["src_lang"].append(row["src_lang"])
                columns["trg_lang"].append(row["trg_lang"])
                columns["order"].append([int(original) for original in order])
                columns["source_index"].append(index)
                columns["augmentation"].append(kind)
    _warn_contradictions(contradicting, len(ds))
    return Dataset.from_dict(columns, features=RLVR_FEATURES)


def to_prompt_completion(conversations: Dataset) -> Dataset:
    """Split ``messages`` conversations into TRL's ``prompt`` (every turn but the last) and ``completion`` (the last,
    assistant turn) columns, so ``SFTTrainer`` puts the loss on the answer only.

    Example:
        >>> turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        >>> rows = Dataset.from_dict({"messages": [turns]})
        >>> to_prompt_completion(rows)[0]["completion"]
        [{'role': 'assistant', 'content': 'a'}]
    """
    return conversations.map(
        lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
        remove_columns=["messages"],
    )

"""Judge training and evaluation data for the miniature task, built from the oracle.

A *group* is one Aklan source with 2-4 Berun candidates, each the reference with a known number of errors
(:func:`trl_grrm.mini.task.perturb`), scored by the oracle. :func:`build_ranking_dataset` writes groups in the
package's ranking-dataset layout (``src_text``, ``src_lang``, ``trg_lang``, ``mt_texts``, ``scores``, ``analysis``),
so :func:`trl_grrm.data.judge_builders.build_judge_sft_dataset`,
:func:`~trl_grrm.data.judge_builders.build_judge_rlvr_dataset` and
:func:`trl_grrm.evaluation.ranking.groups_from_dataset` read it unchanged.

The analysis is templated. Four styles:

* ``"compare"`` (copy-and-compare): the judge first writes its own translation of the source, then each
  candidate's differences from it, then the error count. A tiny model copies and compares far more easily than it
  recalls a dictionary and counts inside attention; it is also the spirit of GRRM's comparative analysis.
* ``"echo"``: as ``"compare"``, but each candidate's line first copies the candidate (``A: talu besk | missing ilk;
  1 error``), which ties every letter to its text and puts the two texts to compare side by side in the answer.
* ``"walk"``: each candidate's line walks the whole alignment with the judge's translation, word by word: a shared
  word once, and each difference where it happens (``kwe taluen ilk missing besk seko as seka; 2 errors``). Meant
  to need only the next word of each text at every step, instead of a search for differences anywhere in the
  candidate. Alone it helped the SQM judge and not the GQM judge; after reading drills
  (:func:`build_reading_dataset`) and long enough training it makes the best GQM judge so far (docs/miniature.md).
* ``"count"``: only each candidate's error count (the shortest answer).

A :class:`Teacher` writes the analyses: by default one that sees every error, as the oracle does, or one with a
blind spot (omitted words, or number errors) that overlooks a share of those errors, as the paper's teacher model
misses some; :func:`as_taught` gives the scores it would write, which judge SFT then imitates.

Any style can end with a *tally* (:func:`add_tally`, ``benchmarks/mini_judge_feasibility.py --tally``): one line
that lists the candidates under each error count, from none to :data:`~trl_grrm.mini.task.MAX_COUNTED_ERRORS` or
more (``Tally: no errors D; 1 error B C; 2 errors -; ...``), so that the ranking and the scores after the analysis
only read it left to right. Measured on the walk judge, it did not pay for its 50% longer answers
(docs/miniature.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from ..formats.gqm import CANDIDATE_IDS, build_gqm_prompt
from ..formats.sqm import build_sqm_prompt, format_sqm_answer
from ..ranking import pairwise_relations
from .task import (
    ERROR_KINDS,
    MAX_COUNTED_ERRORS,
    SOURCE_LANGUAGE,
    TARGET_LANGUAGE,
    Edit,
    GrammarSettings,
    align,
    errors_to_score,
    is_number_error,
    perturb,
    sample_source,
    translate,
)

ANALYSIS_STYLES = ("compare", "echo", "walk", "count")


def _errors_phrase(count: int) -> str:
    return "no errors" if count == 0 else ("1 error" if count == 1 else f"{count} errors")


_WALK_STEPS = {
    "same": "{reference}",
    "wrong": "{reference} as {candidate}",
    "missing": "{reference} missing",
    "extra": "extra {candidate}",
    "order": "{reference} wrong order",
}


BLIND_SPOTS: dict[str, Callable[[Edit], bool]] = {
    "missing": lambda edit: edit.kind == "missing",
    "number": is_number_error,
}
"""Error kinds a :class:`Teacher` can be blind to: omitted words (a classic blind spot of MT judges) or a noun or
verb in the other number (:func:`~trl_grrm.mini.task.is_number_error`)."""


@dataclass(frozen=True)
class Teacher:
    """Who writes the judge's SFT analyses and the scores after them. ``Teacher()`` sees every error, as the oracle.

    With ``overlook`` > 0 it has a blind spot, as the paper's teacher model has: it overlooks each error of kind
    ``blind_spot`` (:data:`BLIND_SPOTS`) with that probability, and walks over it as if the candidate had the
    reference's word. Whether it overlooks an error depends only on the candidate, the reference and the error's
    place, so one candidate gets the same analysis in every group and in the SQM data. Judge RLVR, rewarded by the
    oracle's ranking, can then teach the judge what its teacher missed.

    Example:
        >>> [step.kind for step in Teacher().path("kwe besk seka", "kwe taluen besk seka")]
        ['same', 'missing', 'same', 'same']
        >>> blind = Teacher(overlook=1.0)
        >>> [step.kind for step in blind.path("kwe besk seka", "kwe taluen besk seka")]
        ['same', 'same', 'same', 'same']
        >>> [teacher.errors("kwe besk seko", "kwe taluen besk seka") for teacher in (Teacher(), blind)]
        [2, 1]
    """

    overlook: float = 0.0
    blind_spot: str = "missing"

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlook <= 1.0:
            raise ValueError(f"a teacher's overlook rate must lie in 0-1, got {self.overlook}")
        if self.blind_spot not in BLIND_SPOTS:
            raise ValueError(f"unknown blind spot {self.blind_spot!r}; choose one of {sorted(BLIND_SPOTS)}")

    def path(self, candidate: str, reference: str) -> list[Edit]:
        """The alignment of ``candidate`` with ``reference`` (:func:`~trl_grrm.mini.task.align`, matches included)
        as this teacher sees it."""
        path = align(candidate, reference, with_matches=True)
        if self.overlook == 0.0:
            return path
        in_blind_spot = BLIND_SPOTS[self.blind_spot]
        return [
            Edit("same", step.reference, step.reference)
            if in_blind_spot(step) and random.Random(f"{reference}|{candidate}|{place}").random() < self.overlook
            else step
            for place, step in enumerate(path)
        ]

    def errors(self, candidate: str, reference: str) -> int:
        """The error count this teacher writes: the oracle's when it overlooks nothing."""
        return sum(step.kind != "same" for step in self.path(candidate, reference))


def blind_spot_pairs(candidates: Sequence[str], reference: str, blind_spot: str = "missing") -> list[tuple[int, int]]:
    """The candidate pairs ``(i, j)``, ``i < j``, that a teacher blind to every error of kind ``blind_spot`` orders
    differently from the oracle: the pairs where that blind spot decides the ranking.

    Example:
        >>> blind_spot_pairs(["kwe besk seka", "kwe taluen besk seko", "kwe taluen besk seka"], "kwe taluen besk seka")
        [(0, 1), (0, 2)]
    """
    blind = Teacher(1.0, blind_spot)
    oracle = [errors_to_score(Teacher().errors(text, reference)) for text in candidates]
    taught = [errors_to_score(blind.errors(text, reference)) for text in candidates]
    truth, seen = pairwise_relations(dict(enumerate(oracle))), pairwise_relations(dict(enumerate(taught)))
    return [pair for pair, relation in truth.items() if seen[pair] != relation]


def describe_candidate(candidate: str, reference: str, style: str = "compare", teacher: Teacher = Teacher()) -> str:
    """One candidate's line of analysis against the reference (without its letter), as ``teacher`` sees it (by
    default it sees every error).

    Example:
        >>> describe_candidate("kwe taluen besk seka", "kwe taluen ilk besk seko")
        'missing ilk; seko written as seka; 2 errors'
        >>> describe_candidate("kwe taluen besk seka", "kwe taluen ilk besk seko", style="count")
        '2 errors'
        >>> describe_candidate("kwe taluen besk seka", "kwe taluen ilk besk seko", style="echo")
        'kwe taluen besk seka | missing ilk; seko written as seka; 2 errors'
        >>> describe_candidate("kwe taluen besk seka", "kwe taluen ilk besk seko", style="walk")
        'kwe taluen ilk missing besk seko as seka; 2 errors'
        >>> describe_candidate("kwe taluen besk seka", "kwe taluen ilk besk seko", "walk", Teacher(overlook=1.0))
        'kwe taluen ilk besk seko as seka; 1 error'
    """
    if style not in ANALYSIS_STYLES:
        raise ValueError(f"unknown analysis style {style!r}; choose one of {list(ANALYSIS_STYLES)}")
    path = teacher.path(candidate, reference)
    edits = [step for step in path if step.kind != "same"]
    if style == "walk":
        walk = " ".join(_WALK_STEPS[s.kind].format(reference=s.reference, candidate=s.candidate) for s in path)
        return f"{walk}; {_errors_phrase(len(edits))}"
    if style == "count" or not edits:
        description = _errors_phrase(len(edits))
    else:
        description = "; ".join([*(edit.describe() for edit in edits), _errors_phrase(len(edits))])
    return f"{candidate} | {description}" if style == "echo" else description


def tally_line(error_counts: Sequence[int]) -> str:
    """The candidates grouped by error count, every count from none to ``MAX_COUNTED_ERRORS`` or more (``-``: none).

    Example:
        >>> tally_line([4, 1, 1, 0])
        'Tally: no errors D; 1 error B C; 2 errors -; 3 errors -; 4 errors A; 5 or more errors -'
    """
    buckets: list[list[str]] = [[] for _ in range(MAX_COUNTED_ERRORS + 1)]
    for cid, count in zip(CANDIDATE_IDS, error_counts):
        buckets[min(count, MAX_COUNTED_ERRORS)].append(cid)
    labels = [_errors_phrase(count) for count in range(MAX_COUNTED_ERRORS)] + [f"{MAX_COUNTED_ERRORS} or more errors"]
    return "Tally: " + "; ".join(f"{label} {' '.join(ids) or '-'}" for label, ids in zip(labels, buckets))


def group_analysis(
    source: str, candidates: Sequence[str], style: str = "compare", teacher: Teacher = Teacher()
) -> str:
    """The templated analysis of a group (the part of the answer before the ranking and scores), as ``teacher``
    sees it.

    Example:
        >>> print(group_analysis("ri bero mab tapa ka kiro nalu", ["kwe taluen ilk besk seko", "taluen ilk besk seko"]))
        My translation: kwe taluen ilk besk seko
        A: no errors
        B: missing kwe; 1 error
    """
    reference = translate(source)
    lines = [f"{cid}: {describe_candidate(text, reference, style, teacher)}"
             for cid, text in zip(CANDIDATE_IDS, candidates)]  # fmt: skip
    if style != "count":
        lines.insert(0, f"My translation: {reference}")
    return "\n".join(lines)


def sample_group(
    rng: random.Random,
    group_size: int,
    max_errors: int = 4,
    settings: GrammarSettings = GrammarSettings(),
    source: str | None = None,
    error_kinds: Sequence[str] = ERROR_KINDS,
) -> dict[str, Any]:
    """One group: a source and ``group_size`` candidates whose error counts are drawn uniformly from 0..max_errors.

    Returns ``{"src_text", "mt_texts", "errors", "scores"}``.

    Example:
        >>> group = sample_group(random.Random(1), 3)
        >>> len(group["mt_texts"]), group["scores"] == [10 - 2 * e for e in group["errors"]]
        (3, True)
    """
    if not 2 <= group_size <= len(CANDIDATE_IDS):
        raise ValueError(f"group_size must be 2-{len(CANDIDATE_IDS)}, got {group_size}")
    if not 0 <= max_errors <= MAX_COUNTED_ERRORS:
        raise ValueError(f"max_errors must be 0-{MAX_COUNTED_ERRORS}, got {max_errors}")
    source = source if source is not None else sample_source(rng, settings)
    reference = translate(source)
    # Without insertions a candidate cannot have more errors than the reference has words.
    most = max_errors if "extra" in error_kinds else min(max_errors, len(reference.split()))
    errors = [rng.randint(0, most) for _ in range(group_size)]
    texts = [perturb(reference, k, rng, kinds=error_kinds) for k in errors]
    return {"src_text": source, "mt_texts": texts, "errors": errors, "scores": [errors_to_score(k) for k in errors]}


def build_ranking_dataset(
    num_groups: int,
    *,
    seed: int = 0,
    group_sizes: Sequence[int] = (2, 3, 4),
    max_errors: int = 4,
    style: str = "compare",
    settings: GrammarSettings = GrammarSettings(),
    exclude_sources: Iterable[str] = (),
    error_kinds: Sequence[str] = ERROR_KINDS,
) -> Dataset:
    """``num_groups`` labelled groups in the package's ranking-dataset layout, with templated analyses.

    Sources in ``exclude_sources`` are never used (pass the training sources to build a held-out set).
    ``error_kinds`` limits the injected errors (see :data:`trl_grrm.mini.task.ERROR_KINDS`). The same arguments give
    the same dataset.

    Example:
        >>> ds = build_ranking_dataset(3, seed=0, group_sizes=(4,))
        >>> ds.column_names
        ['src_text', 'src_lang', 'trg_lang', 'mt_texts', 'scores', 'errors', 'analysis']
        >>> ds[0]["src_lang"], len(ds[0]["mt_texts"])
        ('Aklan', 4)
    """
    if num_groups < 0:
        raise ValueError(f"num_groups must be >= 0, got {num_groups}")
    rng = random.Random(seed)
    excluded = set(exclude_sources)
    columns: dict[str, list[Any]] = {
        name: [] for name in ("src_text", "src_lang", "trg_lang", "mt_texts", "scores", "errors", "analysis")
    }
    while len(columns["src_text"]) < num_groups:
        source = sample_source(rng, settings)
        if source in excluded:
            continue
        size = rng.choice(list(group_sizes))
        group = sample_group(rng, size, max_errors, settings, source=source, error_kinds=error_kinds)
        for name in ("src_text", "mt_texts", "scores", "errors"):
            columns[name].append(group[name])
        columns["src_lang"].append(SOURCE_LANGUAGE)
        columns["trg_lang"].append(TARGET_LANGUAGE)
        columns["analysis"].append(group_analysis(source, group["mt_texts"], style))
    return Dataset.from_dict(columns)


def add_tally(ranking: Dataset) -> Dataset:
    """``ranking`` with its analyses ending in the tally of their groups (:func:`tally_line` of the ``errors``).

    Example:
        >>> ranking = add_tally(build_ranking_dataset(1, group_sizes=(2,)))
        >>> ranking[0]["analysis"].splitlines()[-1].startswith("Tally: no errors")
        True
    """
    return ranking.map(lambda row: {"analysis": f"{row['analysis']}\n{tally_line(row['errors'])}"})


def build_sqm_sft_dataset(ranking: Dataset, style: str = "compare", teacher: Teacher = Teacher()) -> Dataset:
    """Pointwise (SQM) judge SFT conversations: one per candidate of every group, same templated analysis.

    The analysis is the candidate's own line (with ``"My translation: ..."`` first in the ``compare`` style) and the
    answer ends with its score alone on the last line (:func:`trl_grrm.formats.sqm.format_sqm_answer`). Pass a
    teacher with a blind spot together with its labels (:func:`as_taught`).

    Example:
        >>> ranking = build_ranking_dataset(1, group_sizes=(2,))
        >>> len(build_sqm_sft_dataset(ranking))
        2
    """
    messages = []
    for row in ranking:
        reference = translate(row["src_text"])
        for text, score in zip(row["mt_texts"], row["scores"]):
            analysis = describe_candidate(text, reference, style, teacher)
            if style != "count":
                analysis = f"My translation: {reference}\n{analysis}"
            prompt = build_sqm_prompt(row["src_text"], text, row["src_lang"], row["trg_lang"])
            answer = format_sqm_answer(analysis, score)
            messages.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
    return Dataset.from_dict({"messages": messages})


def as_taught(ranking: Dataset, teacher: Teacher) -> Dataset:
    """``ranking`` with each candidate's score replaced by the one ``teacher`` writes after its analysis: the labels
    judge SFT imitates. RLVR and evaluation keep the oracle's.

    Example:
        >>> ranking = Dataset.from_dict({"src_text": ["ri bero mab tapa ka kiro nalu"],  # kwe taluen ilk besk seko
        ...     "mt_texts": [["kwe taluen besk seko", "kwe taluen ilk besk seka"]], "scores": [[8, 8]]})
        >>> as_taught(ranking, Teacher(overlook=1.0))[0]["scores"]
        [10, 8]
    """
    if teacher.overlook == 0.0:
        return ranking
    return ranking.map(lambda row: {"scores": [
        errors_to_score(teacher.errors(text, translate(row["src_text"]))) for text in row["mt_texts"]
    ]})  # fmt: skip


def reading_answer(candidates: Sequence[str], order: Sequence[int]) -> str:
    """The answer of a reading drill: the candidates at ``order``, each copied after its letter.

    Example:
        >>> print(reading_answer(["kwe taluen", "taluen ilk", "besk"], [2, 0]))
        C: besk
        A: kwe taluen
    """
    return "\n".join(f"{CANDIDATE_IDS[i]}: {candidates[i]}" for i in order)


def build_reading_dataset(ranking: Dataset, seed: int = 0) -> Dataset:
    """Reading drills for a GQM judge: the real GQM prompt of each group, and an answer that copies its candidates
    named by letter, all of them in a shuffled order.

    Judging a group starts with finding each candidate's text by its letter among near-copies of one another; a
    tiny judge trained on the full analysis alone learns that step slowly, if at all (docs/miniature.md). The drills
    teach it on its own, as a first SFT stage (``reproduce-mini --judge_reading_drills``).

    Example:
        >>> drills = build_reading_dataset(build_ranking_dataset(2, group_sizes=(3,)))
        >>> [turn["role"] for turn in drills[0]["messages"]]
        ['user', 'assistant']
        >>> sorted(line[0] for line in drills[0]["messages"][1]["content"].splitlines())
        ['A', 'B', 'C']
    """
    rng = random.Random(seed)
    messages = []
    for row in ranking:
        order = list(range(len(row["mt_texts"])))
        rng.shuffle(order)
        prompt = build_gqm_prompt(row["src_text"], row["mt_texts"], row["src_lang"], row["trg_lang"])
        answer = reading_answer(row["mt_texts"], order)
        messages.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
    return Dataset.from_dict({"messages": messages})

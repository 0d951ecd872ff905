"""``trl-grrm eval-ranking``: how well a judge ranks groups of translations against human or LLM labels.

The dataset is a *ranking dataset* (columns ``src_text``, ``src_lang``, ``trg_lang``, ``mt_texts``, ``scores``; higher
score = better), e.g. the test split of ``double7/TowerBlocks-MT-Ranking``. Each group is shown to the judge, the
judge's scores are turned into pairwise relations (better / worse / tie) and compared with the labels.

Judges are formats of the judging core (:class:`trl_grrm.judging.JudgeFormat`, also importable here as
``RankingJudge``): a judge turns one group, in the order it is shown, into chat prompts and turns the parsed answers
back into one score per candidate. Shipped: :class:`~trl_grrm.judging.GQMJudge` (this package's GRRM format, one
prompt per group) and :class:`~trl_grrm.judging.SQMJudge` (pointwise, one prompt per candidate). Any
:class:`~trl_grrm.engines.JudgeEngine` runs them (built by :func:`trl_grrm.engines.build_engine`): in-process vLLM,
OpenAI-compatible servers or transformers.

Metrics, per language pair and overall (see :func:`summarize`):

* ``accuracy``: the GRRM paper's metric. Per group, the share of candidate pairs whose relation matches the label,
  ties being a class of their own; the mean over groups. A group the judge could not score counts 0, whatever the
  reason (as in the paper, so a judge that often fails to answer scores low), but only when the judge scored at
  least one group: when it scored none, every accuracy is ``null`` (``-`` in the table), not 0.
* ``accuracy_tie_lenient``: the same, but a tie against a strict order (either way round) earns half a pair.
* ``accuracy_parsed``: ``accuracy`` over the groups the judge did score (unjudged groups left out).
* ``judged`` of ``evaluations`` (groups x candidate orders) got scores; ``failures`` counts the others by reason
  (:mod:`trl_grrm.judging.failures`): ``unavailable`` (the engine never answered), ``prompt_too_long``,
  ``truncated`` (every answer hit ``--max-tokens``), ``parse_failed`` (answers without usable scores);
  ``unjudged_rate`` is their share, ``parse_failure_rate`` the share of ``parse_failed`` alone.
* ``tie_rate``: share of tied pairs in the judge's scores (scored groups); ``truth_tie_rate``: the same in the
  labels.
* With ``--permutations k``: every group is also judged in ``k - 1`` further seeded candidate orders. Each metric is
  the mean over the ``k`` orders; ``per_permutation`` lists them, ``accuracy_spread`` (max - min) and
  ``accuracy_std`` show the position bias, ``ranking_consistency`` is the share of groups (scored in every order)
  ranked identically in all orders, and ``score_averaged`` is the accuracy of the scores averaged over the orders.

Groups of more than ``--max-candidates-per-call`` (default 4) candidates are judged by the GQM judge in overlapping
subgroups (``--subgroup-coverage`` per candidate), one fitted score per candidate (:class:`~trl_grrm.judging.GQMJudge`).

Preference files (``--preferences``; columns ``prompt``, ``chosen``, ``rejected``, optionally ``subset`` and, for the
MT judges ``gqm``/``sqm``, ``src_lang``/``trg_lang``): every pair is judged in both orders (chosen shown first, then
second; a pairwise judge such as ``gram`` asks one order per evaluation) by any judge of
:data:`~trl_grrm.judging.JUDGE_FORMATS`. Reported per ``subset`` and overall (:func:`summarize_preferences`):
``accuracy`` over both orders (a tie earns half), ``inconsistency`` (the verdict flips with the order),
``position_bias`` (share of strict verdicts won by the response shown first, minus 0.5), ties and failures.

Judging runs on :class:`trl_grrm.judging.JudgeRunner`: every prompt of a round goes to the engine in one call;
answers that do not parse or were cut at the token limit are asked again, at most ``--max-retries`` times, at
``max(--retry-temperature, --temperature)`` with a new seed per re-ask (:class:`trl_grrm.judging.RetryPolicy`). The JSON output keeps
every prompt and answer for audit.

Exit status: 0 when the judge scored at least one group; 1 when it scored none (the JSON is still written, with
the failure counts; one line on stderr says why); 2 for bad arguments or data, and for a judge configuration error
(unknown model, rejected key: one line naming the URL and the model, before any result is written).

Example:
    trl-grrm eval-ranking --dataset double7/TowerBlocks-MT-Ranking --split test \\
        --backend vllm --model double7/Qwen2.5-7B-GRRM --permutations 3 --output grrm_eval.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import inspect
import json
import math
import random
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import engines
from ..engines import VLLM_MEMORY_SHARE, EngineConfig, JudgeConfig, JudgeConfigurationError, JudgeEngine, SamplingSettings
from ..judge_training.rewards import relation_agreement
from ..judging import (
    JUDGE_FORMATS,
    MAX_RETRIES_LIMIT,
    GQMJudge,  # noqa: F401 - re-exported: judges were defined here before the judging core
    JudgeAnswerError,  # noqa: F401
    JudgeFormat,
    JudgeRunner,
    JudgeTask,
    RetryPolicy,
    SQMJudge,  # noqa: F401
    attempt_counts,
)
from ..judging.failures import JUDGE_FAILURES, PARSE_FAILED, PROMPT_TOO_LONG, TRUNCATED, UNAVAILABLE, describe_failures
from ..ranking import pairwise_relations, tie_rate
from ..scripts.parsing import add_config_argument, add_nested_arguments, parse_with_config

RANKING_COLUMNS = ("src_text", "src_lang", "trg_lang", "mt_texts", "scores")
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")

# -- data --------------------------------------------------------------------------------------------------------


def load_ranking_dataset(name_or_path: str, split: str = "test", config: str | None = None, columns=RANKING_COLUMNS):
    """Load a ranking dataset from a local file, a local folder or the hub, and check its columns (``columns``:
    :data:`RANKING_COLUMNS`, or the ``prompt``/``chosen``/``rejected`` columns of a preference file).

    * a file (``.parquet``, ``.jsonl``, ``.json``, ``.csv``): the whole file, whatever ``split`` says;
    * a folder: the file ``<split>.parquet`` / ``<split>.jsonl`` / ``<split>.json`` in it;
    * anything else: ``datasets.load_dataset(name_or_path, config, split=split)``.

    Example:
        >>> load_ranking_dataset("data/ranking_test.jsonl")  # doctest: +SKIP
    """
    from datasets import load_dataset

    path = Path(name_or_path)
    builders = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
    if path.is_file():
        if path.suffix not in builders:
            raise ValueError(f"cannot read {path}: use a .parquet, .jsonl, .json or .csv file")
        ds = load_dataset(builders[path.suffix], data_files=str(path), split="train")
    elif path.is_dir():
        files = [path / f"{split}{suffix}" for suffix in (".parquet", ".jsonl", ".json")]
        found = next((f for f in files if f.is_file()), None)
        if found is None:
            raise ValueError(f"no {split}.parquet, {split}.jsonl or {split}.json in {path}")
        ds = load_dataset(builders[found.suffix], data_files=str(found), split="train")
    else:
        ds = load_dataset(name_or_path, config, split=split)
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        kind = "preference" if columns == PREFERENCE_COLUMNS else "ranking"
        raise ValueError(f"{name_or_path} lacks {kind} column(s) {missing}; it has {ds.column_names}")
    return ds


@dataclass(frozen=True)
class RankingGroup:
    """One labelled group: a source, its candidate translations and their true scores (higher = better)."""

    index: int
    source_text: str
    source_language: str
    target_language: str
    candidates: list[str]
    scores: list[float]
    reference: str | None = None  # for judges that read one (GEMBA-SQM); ranking datasets have none

    @property
    def language_pair(self) -> str:
        return f"{self.source_language}-{self.target_language}"


def groups_from_dataset(ds: Iterable[dict[str, Any]]) -> list[RankingGroup]:
    """Rows of a ranking dataset as :class:`RankingGroup` objects (scores must be finite numbers)."""
    groups = []
    for index, row in enumerate(ds):
        candidates, scores = list(row["mt_texts"]), list(row["scores"])
        if len(candidates) != len(scores):
            raise ValueError(f"row {index}: {len(candidates)} candidates but {len(scores)} scores")
        for score in scores:
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise ValueError(f"row {index}: scores must be finite numbers, got {scores}")
        groups.append(
            RankingGroup(index, str(row["src_text"]), str(row["src_lang"]), str(row["trg_lang"]), candidates, scores)
        )
    return groups


# -- judges ------------------------------------------------------------------------------------------------------


#: The judge-format protocol of :mod:`trl_grrm.judging` under its former name (judges written for eval-ranking
#: implement it: ``prompts``, ``parse(output, prompt_index, num_candidates)``, ``combine``).
RankingJudge = JudgeFormat

JUDGES: dict[str, type[JudgeFormat]] = JUDGE_FORMATS
"""Judges selectable with ``--judge`` (:data:`trl_grrm.judging.JUDGE_FORMATS`)."""


# -- evaluation --------------------------------------------------------------------------------------------------


@dataclass
class _Evaluation(JudgeTask):
    """One group judged in one candidate order (a :class:`~trl_grrm.judging.JudgeTask` that knows which order)."""

    permutation: int = 0


def permutation_orders(num_candidates: int, count: int, rng: random.Random) -> list[list[int]]:
    """``count`` candidate orders: the stored order first, then distinct random orders while any are left.

    Once every order of the group has been used (``n!`` of them), further orders repeat random ones.

    Example:
        >>> permutation_orders(2, 3, random.Random(0))
        [[0, 1], [1, 0], [0, 1]]
    """
    orders = [list(range(num_candidates))]
    seen = {tuple(orders[0])}
    total = math.factorial(num_candidates)
    while len(orders) < count:
        order = list(range(num_candidates))
        rng.shuffle(order)
        if tuple(order) in seen and len(seen) < total:
            continue
        seen.add(tuple(order))
        orders.append(order)
    return orders


def _relation_accuracy(predicted: Sequence[float], truth: Sequence[float], ties: str) -> float:
    return relation_agreement(dict(enumerate(predicted)), dict(enumerate(truth)), ties)


def judge_groups(
    groups: Sequence[RankingGroup],
    judge: JudgeFormat,
    engine: JudgeEngine,
    sampling: SamplingSettings,
    *,
    permutations: int = 1,
    seed: int = 0,
    max_retries: int = 2,
    retry_temperature: float = 1.0,
    progress: Any = None,
) -> list[_Evaluation]:
    """Ask ``judge`` (through ``engine``) about every group in ``permutations`` candidate orders.

    The judging core (:class:`~trl_grrm.judging.JudgeRunner`) sends every prompt of every order in one engine call
    per round and re-asks answers that do not parse or were truncated, on the schedule of
    :class:`~trl_grrm.judging.RetryPolicy`. Engine errors (prompt too long, engine unavailable) are final; a
    :class:`~trl_grrm.engines.JudgeConfigurationError` propagates. ``progress(completed, total, description)`` is
    called after each round.
    """
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    policy = RetryPolicy(max_retries=max_retries, retry_temperature=retry_temperature)
    evaluations: list[_Evaluation] = []
    for group in groups:
        rng = random.Random(f"{seed}-{group.index}")
        for number, order in enumerate(permutation_orders(len(group.candidates), permutations, rng)):
            evaluations.append(_Evaluation(group, order, permutation=number))
    JudgeRunner(engine, policy, sampling).run(judge, evaluations, progress=progress)
    return evaluations


# -- metrics -----------------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _one_permutation(evaluations: Sequence[_Evaluation], any_judged: bool) -> dict[str, Any]:
    strict, lenient, parsed_strict, ties, truth_ties = [], [], [], [], []
    failures = dict.fromkeys(JUDGE_FAILURES, 0)
    for evaluation in evaluations:
        truth = evaluation.group.scores
        truth_ties.append(tie_rate(dict(enumerate(truth))))
        if evaluation.scores is None:
            failures[evaluation.failure or PARSE_FAILED] += 1
            continue
        value = _relation_accuracy(evaluation.scores, truth, "class")
        strict.append(value)
        parsed_strict.append(value)
        lenient.append(_relation_accuracy(evaluation.scores, truth, "half"))
        ties.append(tie_rate(dict(enumerate(evaluation.scores))))
    count = len(evaluations)
    judged = len(parsed_strict)
    unjudged = count - judged
    # The paper's metric counts an unjudged group 0; when nothing at all was judged there is no accuracy to report.
    return {
        "accuracy": _mean(strict + [0.0] * unjudged) if any_judged else None,
        "accuracy_tie_lenient": _mean(lenient + [0.0] * unjudged) if any_judged else None,
        "accuracy_parsed": _mean(parsed_strict),
        "judged": judged,
        "unjudged_rate": unjudged / count if count else None,
        "parse_failure_rate": failures[PARSE_FAILED] / count if count else None,
        "tie_rate": _mean(ties),
        "truth_tie_rate": _mean(truth_ties),
        "failures": failures,
    }


def summarize(evaluations: Sequence[_Evaluation], permutations: int) -> dict[str, Any]:
    """Metrics of one subset of groups (see the module doc), averaged over the permutations."""
    by_permutation = [[e for e in evaluations if e.permutation == p] for p in range(permutations)]
    any_judged = any(e.scores is not None for e in evaluations)
    per = [_one_permutation(subset, any_judged) for subset in by_permutation]
    first = by_permutation[0]
    result: dict[str, Any] = {
        "groups": len(first),
        "pairs": sum(math.comb(len(e.group.candidates), 2) for e in first),
        "evaluations": len(evaluations),
        "judged": sum(p["judged"] for p in per),
    }
    for key in ("accuracy", "accuracy_tie_lenient", "accuracy_parsed", "unjudged_rate", "parse_failure_rate",
                "tie_rate", "truth_tie_rate"):  # fmt: skip
        values = [p[key] for p in per if p[key] is not None]
        result[key] = _mean(values)
    result["failures"] = {k: sum(p["failures"][k] for p in per) for k in per[0]["failures"]}
    requests = [r for e in evaluations for r in e.requests]
    counts = attempt_counts([a for r in requests for a in r.attempts])
    result["requests"] = len(requests)
    for key in ("answers", "retries", "truncated_answers", "request_retries"):
        result[key] = counts[key]
    result["answer_parse_failure_rate"] = counts["parse_failures"] / counts["answers"] if counts["answers"] else None
    if permutations > 1:
        accuracies = [p["accuracy"] for p in per if p["accuracy"] is not None]
        result["per_permutation"] = {
            key: [p[key] for p in per]
            for key in ("accuracy", "accuracy_tie_lenient", "accuracy_parsed", "unjudged_rate", "parse_failure_rate",
                        "tie_rate")
        }  # fmt: skip
        result["accuracy_spread"] = max(accuracies) - min(accuracies) if accuracies else None
        result["accuracy_std"] = statistics.pstdev(accuracies) if accuracies else None
        by_group: dict[int, list[_Evaluation]] = {}
        for evaluation in evaluations:
            by_group.setdefault(evaluation.group.index, []).append(evaluation)
        complete = [evs for evs in by_group.values() if all(e.scores is not None for e in evs)]
        result["ranking_consistency"] = _mean(
            [float(len({tuple(pairwise_relations(dict(enumerate(e.scores))).values()) for e in evs}) == 1)
             for evs in complete]
        )  # fmt: skip
        averaged_strict, averaged_lenient = [], []
        for evs in by_group.values():
            scored = [e.scores for e in evs if e.scores is not None]
            truth = evs[0].group.scores
            if not scored:
                averaged_strict.append(0.0)
                averaged_lenient.append(0.0)
                continue
            mean_scores = [sum(column) / len(scored) for column in zip(*scored)]
            averaged_strict.append(_relation_accuracy(mean_scores, truth, "class"))
            averaged_lenient.append(_relation_accuracy(mean_scores, truth, "half"))
        result["score_averaged"] = {
            "accuracy": _mean(averaged_strict) if any_judged else None,
            "accuracy_tie_lenient": _mean(averaged_lenient) if any_judged else None,
        }
    return result


def summarize_all(evaluations: Sequence[_Evaluation], permutations: int) -> dict[str, Any]:
    """``{"overall": {...}, "by_language_pair": {"en-de": {...}, ...}}``."""
    pairs = sorted({e.group.language_pair for e in evaluations})
    return {
        "overall": summarize(evaluations, permutations) if evaluations else {},
        "by_language_pair": {
            pair: summarize([e for e in evaluations if e.group.language_pair == pair], permutations) for pair in pairs
        },
    }


def audit_records(evaluations: Sequence[_Evaluation]) -> list[dict[str, Any]]:
    """One JSON record per group with every prompt and answer of every order."""
    records: dict[int, dict[str, Any]] = {}
    for evaluation in evaluations:
        group = evaluation.group
        record = records.setdefault(group.index, {
            "index": group.index,
            "src_lang": group.source_language,
            "trg_lang": group.target_language,
            "src_text": group.source_text,
            "mt_texts": group.candidates,
            "truth": group.scores,
            "evaluations": [],
        })  # fmt: skip
        accuracy = lenient = None
        if evaluation.scores is not None:
            accuracy = _relation_accuracy(evaluation.scores, group.scores, "class")
            lenient = _relation_accuracy(evaluation.scores, group.scores, "half")
        record["evaluations"].append({
            "permutation": evaluation.permutation,
            "order": evaluation.order,
            "scores": evaluation.scores,
            "failure": evaluation.failure,
            "accuracy": accuracy,
            "accuracy_tie_lenient": lenient,
            "requests": [
                {"prompt": r.messages[-1]["content"], "parsed": r.parsed, "failure": r.failure, "attempts": r.attempts}
                for r in evaluation.requests
            ],
        })  # fmt: skip
    return list(records.values())


# -- output ------------------------------------------------------------------------------------------------------


def _fmt(value: Any, percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else str(value)


def render_table(metrics: dict[str, Any], title: str, console: Any) -> None:
    """Print the metrics as rich tables: one row per language pair plus overall, then (k > 1) the position bias."""
    from rich.table import Table

    rows = [*metrics["by_language_pair"].items(), ("overall", metrics["overall"])]
    table = Table(
        title=f"{title}\npairwise ranking accuracy and tie rates, %; judged and failures count groups x orders",
        title_justify="left",
    )
    headers = ("pair", "groups", "pairs", "acc", "tie-lenient", "acc parsed", "judged", "unavail.", "too long",
               "truncated", "parse fail", "ties", "true ties")  # fmt: skip
    for header in headers:
        table.add_column(header, justify="left" if header == "pair" else "right")
    for name, m in rows:
        failures = m["failures"]
        table.add_row(
            name, str(m["groups"]), str(m["pairs"]), _fmt(m["accuracy"]), _fmt(m["accuracy_tie_lenient"]),
            _fmt(m["accuracy_parsed"]), f"{m['judged']}/{m['evaluations']}", str(failures[UNAVAILABLE]),
            str(failures[PROMPT_TOO_LONG]), str(failures[TRUNCATED]), str(failures[PARSE_FAILED]),
            _fmt(m["tie_rate"]), _fmt(m["truth_tie_rate"]), style="bold" if name == "overall" else None,
        )  # fmt: skip
    console.print(table)
    if "per_permutation" not in metrics["overall"]:
        return
    count = len(metrics["overall"]["per_permutation"]["accuracy"])
    bias = Table(title="accuracy per candidate order (0 = stored order), %", title_justify="left")
    bias.add_column("pair", justify="left")
    for p in range(count):
        bias.add_column(f"order {p}", justify="right")
    for header in ("spread", "std", "same ranking", "score-avg acc"):
        bias.add_column(header, justify="right")
    for name, m in rows:
        bias.add_row(
            name, *(_fmt(v) for v in m["per_permutation"]["accuracy"]), _fmt(m["accuracy_spread"]),
            _fmt(m["accuracy_std"]), _fmt(m["ranking_consistency"]), _fmt(m["score_averaged"]["accuracy"]),
            style="bold" if name == "overall" else None,
        )  # fmt: skip
    console.print(bias)


def save_plot(metrics: dict[str, Any], path: str | Path, title: str) -> None:
    """Bar chart of strict and tie-lenient accuracy per language pair (and per candidate order when k > 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [*metrics["by_language_pair"].items(), ("overall", metrics["overall"])]
    multi = "per_permutation" in metrics["overall"]
    fig, axes = plt.subplots(1, 2 if multi else 1, figsize=(12 if multi else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    positions = list(range(len(rows)))
    width = 0.38
    strict = [100 * (m["accuracy"] or 0.0) for _, m in rows]
    lenient = [100 * (m["accuracy_tie_lenient"] or 0.0) for _, m in rows]
    ax.bar([x - width / 2 for x in positions], strict, width, label="ties as a class")
    ax.bar([x + width / 2 for x in positions], lenient, width, label="tie-lenient")
    ax.set_xticks(positions, [name for name, _ in rows], rotation=30, ha="right")
    ax.set_ylabel("pairwise ranking accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("accuracy by language pair")
    ax.legend(loc="lower right")
    if multi:
        ax = axes[0][1]
        for name, m in rows:
            values = [math.nan if v is None else 100 * v for v in m["per_permutation"]["accuracy"]]
            ax.plot(range(len(values)), values, marker="o", label=name)
        ax.set_xticks(range(len(m["per_permutation"]["accuracy"])))
        ax.set_xlabel("candidate order (0 = stored)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title("accuracy per candidate order")
        ax.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- preference files (prompt / chosen / rejected) ---------------------------------------------------------------


def _text(value: Any, row: int, column: str) -> str:
    """A preference cell as text: a string, or a chat (list of messages) whose last message is the content."""
    if isinstance(value, list) and value and isinstance(value[-1], dict) and "content" in value[-1]:
        value = value[-1]["content"]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"row {row}: column {column!r} must be a non-empty string or chat, got {value!r:.80}")
    return value


@dataclass(frozen=True)
class PreferenceGroup:
    """One labelled preference pair: ``candidates == [chosen, rejected]``, so ``scores == [1, 0]``.

    ``source_language`` / ``target_language`` come from optional ``src_lang`` / ``trg_lang`` columns (the MT judges
    GQM and SQM need them); ``subset`` from an optional ``subset`` column (RewardBench-style sections)."""

    index: int
    source_text: str
    candidates: list[str]
    subset: str = "all"
    source_language: str | None = None
    target_language: str | None = None
    reference: str | None = None
    scores: tuple[float, float] = (1.0, 0.0)

    @property
    def language_pair(self) -> str:  # summaries group preference pairs by subset
        return self.subset


def groups_from_preferences(ds: Iterable[dict[str, Any]]) -> list[PreferenceGroup]:
    """Rows with ``prompt``, ``chosen``, ``rejected`` (and optionally ``subset``, ``src_lang``, ``trg_lang``) as
    :class:`PreferenceGroup` objects; a row with a missing or empty cell raises ``ValueError`` naming row and column.

    Example:
        >>> [g.candidates for g in groups_from_preferences([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])]
        [['4', '5']]
    """
    groups = []
    for index, row in enumerate(ds):
        missing = [c for c in PREFERENCE_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"row {index}: missing column(s) {missing}")
        prompt, chosen, rejected = (_text(row[c], index, c) for c in PREFERENCE_COLUMNS)
        subset = row.get("subset")
        groups.append(PreferenceGroup(
            index, prompt, [chosen, rejected], str(subset) if subset not in (None, "") else "all",
            row.get("src_lang"), row.get("trg_lang"),
        ))  # fmt: skip
    return groups


def preference_judge(name: str, ranking_mismatch: str = "count", **subgroups: Any) -> JudgeFormat:
    """The judge ``--judge name`` for preference pairs: each evaluation is one order (a pairwise judge is built with
    ``both_orders=False``), so the two orders of a pair are two evaluations and their disagreement is measurable."""
    cls = JUDGES[name]
    if name == "gqm":
        return GQMJudge(ranking_mismatch=ranking_mismatch, **subgroups)
    if "both_orders" in inspect.signature(cls).parameters:
        return cls(both_orders=False)
    return cls()


def _verdict(scores: Sequence[float] | None) -> str | None:
    """``"chosen"``, ``"rejected"`` or ``"tie"`` from the scores of ``[chosen, rejected]`` (``None``: unjudged)."""
    if scores is None:
        return None
    if scores[0] == scores[1]:
        return "tie"
    return "chosen" if scores[0] > scores[1] else "rejected"


def summarize_preferences(evaluations: Sequence[_Evaluation]) -> dict[str, Any]:
    """Metrics of preference pairs, each judged in both orders (evaluation ``permutation`` 0: chosen shown first,
    1: rejected shown first):

    * ``accuracy``: over both orders, 1 when the chosen response scores higher, 0.5 for a tie, 0 otherwise; an
      unjudged order counts 0 (as in ``eval-ranking``), ``accuracy_judged`` leaves unjudged orders out;
      ``accuracy_chosen_first`` / ``accuracy_chosen_second`` are the two orders on their own;
    * ``inconsistency``: share of pairs judged in both orders whose verdict (chosen, rejected or tie) differs
      between the orders, i.e. flips when the order flips;
    * ``first_position_rate``: among judged orders with a strict verdict, the share won by the response shown
      first; ``position_bias = first_position_rate - 0.5`` (0: none; +0.5: always the first; -0.5: always the second);
    * ``tie_rate``, ``judged`` of ``evaluations``, ``failures`` by reason.

    Example:
        >>> from trl_grrm.judging import JudgeTask
        >>> group = PreferenceGroup(0, "2+2?", ["4", "5"])
        >>> always_first = [_Evaluation(group, [0, 1], scores=[1.0, 0.0]),
        ...                 _Evaluation(group, [1, 0], scores=[0.0, 1.0], permutation=1)]
        >>> m = summarize_preferences(always_first)
        >>> m["accuracy"], m["inconsistency"], m["position_bias"]
        (0.5, 1.0, 0.5)
    """
    credit = {"chosen": 1.0, "tie": 0.5, "rejected": 0.0, None: 0.0}
    verdicts: dict[int, dict[int, str | None]] = {}
    first_wins = strict = ties = 0
    failures = dict.fromkeys(JUDGE_FAILURES, 0)
    for evaluation in evaluations:
        verdict = _verdict(evaluation.scores)
        verdicts.setdefault(evaluation.group.index, {})[evaluation.permutation] = verdict
        if verdict is None:
            failures[evaluation.failure or PARSE_FAILED] += 1
        elif verdict == "tie":
            ties += 1
        else:
            strict += 1
            first_shown = "chosen" if evaluation.order[0] == 0 else "rejected"
            first_wins += verdict == first_shown
    all_verdicts = [v for per_pair in verdicts.values() for v in per_pair.values()]
    judged = [v for v in all_verdicts if v is not None]
    both = [p for p in verdicts.values() if len(p) == 2 and None not in p.values()]
    first_rate = first_wins / strict if strict else None
    return {
        "pairs": len(verdicts),
        "evaluations": len(all_verdicts),
        "judged": len(judged),
        "accuracy": _mean([credit[v] for v in all_verdicts]) if judged else None,
        "accuracy_judged": _mean([credit[v] for v in judged]),
        "accuracy_chosen_first": _mean([credit[p[0]] for p in verdicts.values() if 0 in p]) if judged else None,
        "accuracy_chosen_second": _mean([credit[p[1]] for p in verdicts.values() if 1 in p]) if judged else None,
        "inconsistency": _mean([float(p[0] != p[1]) for p in both]),
        "first_position_rate": first_rate,
        "position_bias": None if first_rate is None else first_rate - 0.5,
        "tie_rate": ties / len(judged) if judged else None,
        "failures": failures,
    }


def summarize_preferences_all(evaluations: Sequence[_Evaluation]) -> dict[str, Any]:
    """``{"overall": {...}, "by_subset": {"chat": {...}, ...}}``: the per-subset table, as RewardBench reports."""
    subsets = sorted({e.group.subset for e in evaluations})
    return {
        "overall": summarize_preferences(evaluations) if evaluations else {},
        "by_subset": {s: summarize_preferences([e for e in evaluations if e.group.subset == s]) for s in subsets},
    }


def render_preference_table(metrics: dict[str, Any], title: str, console: Any) -> None:
    """Print the preference metrics as a rich table: one row per subset plus overall."""
    from rich.table import Table

    table = Table(title=f"{title}\npreference pairs, both orders; %, position bias in points", title_justify="left")
    headers = ("subset", "pairs", "acc", "acc judged", "chosen 1st", "chosen 2nd", "inconsistent", "pos. bias",
               "ties", "judged", "failed")  # fmt: skip
    for header in headers:
        table.add_column(header, justify="left" if header == "subset" else "right")
    for name, m in [*metrics["by_subset"].items(), ("overall", metrics["overall"])]:
        bias = m["position_bias"]
        table.add_row(
            name, str(m["pairs"]), _fmt(m["accuracy"]), _fmt(m["accuracy_judged"]), _fmt(m["accuracy_chosen_first"]),
            _fmt(m["accuracy_chosen_second"]), _fmt(m["inconsistency"]), "-" if bias is None else f"{100 * bias:+.1f}",
            _fmt(m["tie_rate"]), f"{m['judged']}/{m['evaluations']}", describe_failures(m["failures"]) or "0",
            style="bold" if name == "overall" else None,
        )  # fmt: skip
    console.print(table)


# -- command line ------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-grrm eval-ranking",
        description="Measure a judge's pairwise ranking accuracy on a ranking dataset "
        "(columns src_text, src_lang, trg_lang, mt_texts, scores).",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="A .parquet/.jsonl/.json/.csv file, a folder with "
                      "<split>.parquet|jsonl|json, or a hub dataset id.")  # fmt: skip
    data.add_argument("--split", default="test", help="Split to evaluate (folders and hub datasets). Default: test.")
    data.add_argument("--dataset_config", default=None, help="Hub dataset configuration name.")
    data.add_argument("--limit", type=int, default=None, help="Evaluate only the first N groups.")
    data.add_argument("--preferences", action="store_true",
                      help="The dataset is a preference file (columns prompt, chosen, rejected; optional subset, "
                      "src_lang, trg_lang): every pair is judged in both orders and the report gives accuracy, "
                      "inconsistency and position bias per subset.")  # fmt: skip

    judge = parser.add_argument_group("judge format")
    judge.add_argument("--judge_format", choices=sorted(JUDGES), default="gqm",
                       help="gqm: group-wise GRRM prompt (one per group, or per subgroup); sqm: pointwise 0-10 "
                       "prompt (one per candidate); gram / gram_r2: pairwise (round robin). Default: gqm.")  # fmt: skip
    judge.add_argument("--max_candidates_per_call", type=int, default=4,
                       help="gqm: larger groups are judged in overlapping subgroups of this size (0: the whole "
                       "group in one prompt). Default 4, the largest group GRRM was trained on.")  # fmt: skip
    judge.add_argument("--subgroup_coverage", type=int, default=2,
                       help="gqm: subgroups each candidate appears in when a group is split (>= 2). Default 2.")
    judge.add_argument("--candidate_orders", type=int, default=1,
                       help="gqm: orders in which a group that fits one prompt is shown, each candidate scored by "
                       "its mean over them, as the reward's candidate_orders (unlike --permutations, one verdict "
                       "per group). Default 1.")  # fmt: skip
    judge.add_argument("--ranking_mismatch", choices=["count", "fail"], default="count",
                       help="gqm: an answer whose ranking line contradicts its scores is only recorded (count) or "
                       "treated as unparsable (fail).")  # fmt: skip

    sampling = parser.add_argument_group("evaluation")
    sampling.add_argument("--seed", type=int, default=0,
                          help="Seeds the candidate orders (and the judge's sampling, unless judge.seed is set).")
    sampling.add_argument("--permutations", type=int, default=1,
                          help="Judge each group in K candidate orders (the stored one + K-1 seeded shuffles) and "
                          "report accuracy per order and its spread.")  # fmt: skip

    # The judge (engine, sampling, re-asks): trl_grrm.engines.JudgeConfig, as in the reward functions.
    add_nested_arguments(parser, "judge", JudgeConfig)
    add_config_argument(parser)

    out = parser.add_argument_group("output")
    out.add_argument("--output", default="ranking_eval.json", help="JSON results with every judge answer.")
    out.add_argument("--plot", default=None, help="PNG plot path (default: --output with .png).")
    out.add_argument("--no_progress", action="store_true", help="Do not show the progress bar.")
    return parser


#: The flags eval-ranking had before the nested judge options, still accepted (hidden from --help).
LEGACY_FLAGS = {
    "--judge": "--judge_format", "--model": "--judge.model", "--backend": "--judge.backend",
    "--base_url": "--judge.base_url", "--api_key_env": "--judge.api_key_env",
    "--max_concurrency": "--judge.max_concurrency", "--request_timeout": "--judge.request_timeout",
    "--request_retries": "--judge.max_request_retries", "--request_backoff": "--judge.request_backoff_seconds",
    "--tensor_parallel_size": "--judge.tensor_parallel_size",
    "--gpu_memory_utilization": "--judge.gpu_memory_utilization", "--max_model_len": "--judge.max_model_len",
    "--dtype": "--judge.dtype", "--enforce_eager": "--judge.enforce_eager", "--batch_size": "--judge.batch_size",
    "--device": "--judge.device", "--temperature": "--judge.temperature", "--top_p": "--judge.top_p",
    "--max_tokens": "--judge.max_tokens", "--max_retries": "--judge.max_parse_retries",
    "--retry_temperature": "--judge.retry_temperature",
}  # fmt: skip


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse an ``eval-ranking`` command line (and its ``--config`` YAML); ``args.judge`` is a
    :class:`~trl_grrm.engines.JudgeConfig` (its seed defaults to ``--seed``).

    Example:
        >>> args = parse_args(["--dataset", "d.jsonl", "--judge.model", "m", "--judge.base_url", "http://h/v1"])
        >>> args.judge_format, args.judge.backend, args.judge.gpu_memory_utilization
        ('gqm', 'openai', None)
    """
    parser = build_parser()
    args = parse_with_config(parser, list(argv), nested={"judge": JudgeConfig}, aliases=LEGACY_FLAGS,
                             nested_defaults={"judge": {"seed": lambda namespace: namespace.seed}})
    if args.judge.model is None:
        parser.error("the judge needs judge.model (--judge.model NAME, or `model:` under `judge:` in --config)")
    return args


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """The :class:`~trl_grrm.engines.EngineConfig` of ``args.judge`` (a vLLM judge gets the GPU to itself:
    :data:`~trl_grrm.engines.VLLM_MEMORY_SHARE` unless ``judge.gpu_memory_utilization`` says otherwise)."""
    return args.judge.engine_config(gpu_memory_utilization=VLLM_MEMORY_SHARE)


def build_engine(args: argparse.Namespace) -> JudgeEngine:
    """The judge engine the command-line arguments describe."""
    return engines.build_engine(engine_config(args))


def _subgroup_settings(args: argparse.Namespace) -> dict[str, Any]:
    per_call = args.max_candidates_per_call
    return {"max_candidates_per_call": per_call or None, "subgroup_coverage": args.subgroup_coverage,
            "candidate_orders": args.candidate_orders}  # fmt: skip


def _check_args(args: argparse.Namespace) -> None:
    if args.permutations < 1:
        raise ValueError("--permutations must be >= 1")
    if not 0 <= args.judge.max_parse_retries <= MAX_RETRIES_LIMIT:
        raise ValueError(f"judge.max_parse_retries must be in 0..{MAX_RETRIES_LIMIT}")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    if args.judge.temperature < 0 or args.judge.retry_temperature < 0:
        raise ValueError("temperatures must be >= 0")
    judge = args.judge
    if judge.max_request_retries < 0 or judge.request_backoff_seconds < 0 or judge.request_timeout <= 0:
        raise ValueError("judge.max_request_retries and judge.request_backoff_seconds must be >= 0, "
                         "judge.request_timeout > 0")


class _Progress:
    """A rich progress bar over judge prompts (updated once per engine round), on stderr."""

    def __init__(self, enabled: bool) -> None:
        self._progress = None
        self._task = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]judging[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=Console(stderr=True),
            )  # fmt: skip

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, completed: int, total: int, description: str) -> None:
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task(description, total=total)
        self._progress.update(self._task, completed=completed, total=total, description=description)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trl-grrm eval-ranking``; returns the exit status."""
    from rich.console import Console

    try:
        args = parse_args(list(sys.argv[1:] if argv is None else argv))
    except ValueError as error:  # a judge option that cannot work (e.g. openai without a base_url)
        print(f"trl-grrm eval-ranking: error: {error}", file=sys.stderr)
        return 2
    # Logs and CI captures are not terminals; rich would squeeze the table into 80 columns there.
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        _check_args(args)
        columns = PREFERENCE_COLUMNS if args.preferences else RANKING_COLUMNS
        dataset = load_ranking_dataset(args.dataset, split=args.split, config=args.dataset_config, columns=columns)
        if args.limit is not None:
            dataset = dataset.select(range(min(args.limit, len(dataset))))
        if args.preferences:
            all_groups = groups_from_preferences(dataset)
            judge = preference_judge(args.judge_format, args.ranking_mismatch, **_subgroup_settings(args))
            if args.judge_format in ("gqm", "sqm") and any(g.source_language is None or g.target_language is None
                                                     for g in all_groups):  # fmt: skip
                raise ValueError(f"the {args.judge_format} judge is an MT judge: the preference file needs src_lang and "
                                 "trg_lang columns on every row")  # fmt: skip
        else:
            all_groups = groups_from_dataset(dataset)
            judge = (GQMJudge(ranking_mismatch=args.ranking_mismatch, **_subgroup_settings(args))
                     if args.judge_format == "gqm" else JUDGES[args.judge_format]())  # fmt: skip
        engine = build_engine(args)
    except (ValueError, FileNotFoundError, JudgeConfigurationError) as error:  # bad arguments, files, hub datasets
        print(f"trl-grrm eval-ranking: error: {error}", file=sys.stderr)
        return 2
    limit = judge.max_candidates or math.inf
    groups = [g for g in all_groups if 2 <= len(g.candidates) <= limit]
    kept = {g.index for g in groups}
    skipped = [g.index for g in all_groups if g.index not in kept]
    if not groups:
        print("trl-grrm eval-ranking: error: no group with 2 or more candidates to evaluate", file=sys.stderr)
        return 2

    sampling = args.judge.sampling()
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        with _Progress(enabled=not args.no_progress) as progress:
            evaluations = judge_groups(
                groups, judge, engine, sampling,
                permutations=2 if args.preferences else args.permutations, seed=args.seed, max_retries=args.judge.max_parse_retries,
                retry_temperature=args.judge.retry_temperature, progress=progress,
            )  # fmt: skip
    except JudgeConfigurationError as error:  # no retry can help: stop before writing any result
        print(f"trl-grrm eval-ranking: error: {error}", file=sys.stderr)
        return 2
    finally:
        engine.close()
    elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()

    if args.preferences:
        metrics = summarize_preferences_all(evaluations)
        judged = metrics["overall"]["judged"] > 0
    else:
        metrics = summarize_all(evaluations, args.permutations)
        judged = metrics["overall"]["judged"] > 0
    title = f"{args.judge_format} judge {args.judge.model} ({args.judge.backend}) on {args.dataset}"
    output = Path(args.output)
    plot = Path(args.plot) if args.plot else output.with_suffix(".png")
    output.parent.mkdir(parents=True, exist_ok=True)
    plot.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "eval-ranking",
        "created": started.isoformat(),
        "elapsed_s": elapsed,
        "args": {**vars(args), "judge": dataclasses.asdict(args.judge)},  # api_key_env: the variable's name, not the key
        "judge": judge.describe(),
        "dataset": {"name": args.dataset, "split": args.split, "groups": len(all_groups), "evaluated": len(groups),
                    "skipped_groups": skipped},
        "metrics": metrics,
        "groups": audit_records(evaluations),
    }
    output.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    if not judged or args.preferences:  # a plot of accuracies that do not exist would only mislead
        plot = None
    else:
        try:
            save_plot(metrics, plot, title)
        except ImportError:  # matplotlib is an optional dependency (the `eval` extra)
            print("trl-grrm eval-ranking: matplotlib is not installed (pip install 'trl-grrm[eval]'); no plot written",
                  file=sys.stderr)  # fmt: skip
            plot = None
    if args.preferences:
        render_preference_table(metrics, title, console)
    else:
        render_table(metrics, title, console)
    console.print(f"results: {output}" + (f"\nplot: {plot}" if plot else ""))
    if not judged:
        print(f"trl-grrm eval-ranking: error: {_nothing_judged(evaluations)}", file=sys.stderr)
        return 1
    return 0


def _nothing_judged(evaluations: Sequence[_Evaluation]) -> str:
    """One line on why the judge scored no group: the failure counts and the first failure of the commonest kind."""
    counts = dict.fromkeys(JUDGE_FAILURES, 0)
    for evaluation in evaluations:
        counts[evaluation.failure or PARSE_FAILED] += 1
    commonest = max(counts, key=counts.get)
    example = next(
        (r.attempts[-1] for e in evaluations for r in e.requests if r.failure == commonest and r.attempts), {}
    )
    detail = example.get("detail") or example.get("parse_error") or ""
    if commonest == TRUNCATED:
        detail = "every answer hit --max-tokens; raise it"
    line = f"no group could be judged: {describe_failures(counts)} of {len(evaluations)} (groups x orders)"
    return f"{line}; e.g. {' '.join(detail.split())[:300]}" if detail else line


if __name__ == "__main__":
    sys.exit(main())

"""Does a miniature judge read its candidates? (diagnostic for issue 9)

The templated analysis of the miniature judges (:mod:`trl_grrm.mini.judge_data`) ends each candidate's line with its
error count. This script asks trained judges about unseen groups (4 candidates, or ``--group-size``; greedy,
transformers) and compares the error count each judge writes for each candidate with the oracle's: how often it is
exact, its Pearson correlation and the mean absolute difference. A judge whose per-candidate lines do not depend on
the candidates scores a correlation near 0, whatever its answer format. It also compares two pairwise accuracies:
that of the judge's answer (its scores; a parse failure counts 0) and that of the ranking its own counts imply
(groups with a count for every candidate). A judge that counts well but ranks badly reads its counts wrongly when
it writes the ranking and scores.

    .venv/bin/python benchmarks/mini_judge_reading.py \\
        gqm=outputs/mini-repro/judge_sft/model sqm=outputs/mini-repro/sqm_sft/model

Prints one line per judge.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_COUNT = re.compile(r"(no errors|(\d+) errors?)")


def written_count(line: str) -> int | None:
    """The error count a judge wrote at the end of a candidate's line, if any."""
    match = _COUNT.search(line)
    if match is None:
        return None
    return 0 if match.group(1) == "no errors" else int(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("judges", nargs="+",
                        help="STYLE=MODEL_DIR, with STYLE gqm (one call per group) or sqm (one call per candidate)")
    parser.add_argument("--groups", type=int, default=60)
    parser.add_argument("--group-size", type=int, default=4, choices=[2, 3, 4])
    parser.add_argument("--seed", type=int, default=99, help="Seed of the groups (the pipeline trains on seeds < 99).")
    args = parser.parse_args()

    import torch

    from trl_grrm.engines import SamplingSettings, TransformersEngine
    from trl_grrm.evaluation.ranking import GQMJudge, SQMJudge, groups_from_dataset, judge_groups
    from trl_grrm.formats.gqm import CANDIDATE_IDS
    from trl_grrm.judge_training.rewards import relation_agreement
    from trl_grrm.mini.judge_data import build_ranking_dataset
    from trl_grrm.mini.task import errors_to_score

    torch.set_num_threads(1)
    ranking = build_ranking_dataset(args.groups, seed=args.seed, group_sizes=(args.group_size,))
    groups = groups_from_dataset(ranking)

    for spec in args.judges:
        style, _, path = spec.partition("=")
        if style not in ("gqm", "sqm") or not path:
            parser.error(f"expected gqm=MODEL_DIR or sqm=MODEL_DIR, got {spec!r}")
        judge = GQMJudge() if style == "gqm" else SQMJudge()
        engine = TransformersEngine(path, dtype="float32", batch_size=64)
        # One greedy answer per prompt; an answer cut at max_tokens is kept, its complete lines still count.
        evaluations = judge_groups(groups, judge, engine, SamplingSettings(max_tokens=240), max_retries=0)
        pairs: list[tuple[int, int]] = []  # (written, oracle)
        answer_accuracy: list[float] = []
        counts_accuracy: list[float] = []
        for evaluation, errors, scores in zip(evaluations, ranking["errors"], ranking["scores"]):
            answers = [request.attempts[-1]["response"] if request.attempts else "" for request in evaluation.requests]
            if style == "gqm":
                lines = [re.search(rf"^{cid}: (.*)$", answers[0], re.M) for cid in CANDIDATE_IDS[: len(errors)]]
                written = [written_count(line.group(1)) if line else None for line in lines]
            else:
                written = [written_count(answer) for answer in answers]
            pairs += [(w, e) for w, e in zip(written, errors) if w is not None]
            truth = dict(enumerate(scores))
            answered = evaluation.scores
            answer_accuracy.append(relation_agreement(dict(enumerate(answered)), truth) if answered else 0.0)
            if None not in written:
                counts_accuracy.append(relation_agreement(dict(enumerate(map(errors_to_score, written))), truth))
        candidates = sum(len(errors) for errors in ranking["errors"])
        xs, ys = zip(*pairs) if pairs else ((), ())
        correlation = statistics.correlation(xs, ys) if len(set(xs)) > 1 and len(set(ys)) > 1 else float("nan")
        exact = sum(x == y for x, y in pairs) / len(pairs) if pairs else float("nan")
        distance = statistics.mean(abs(x - y) for x, y in pairs) if pairs else float("nan")
        print(f"{style} {path}: counts written for {len(pairs)}/{candidates} candidates; exact {exact:.2f}, "
              f"Pearson r {correlation:.2f}, mean |error| {distance:.2f}; pairwise accuracy of the answer "
              f"{statistics.mean(answer_accuracy):.2f}, of its counts' ranking "
              f"{statistics.mean(counts_accuracy) if counts_accuracy else float('nan'):.2f} "
              f"({len(counts_accuracy)}/{len(evaluations)} groups fully counted)", flush=True)


if __name__ == "__main__":
    main()

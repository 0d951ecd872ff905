"""Judge calls and wall time per step for each way of scoring a group: GQM (subgroups), round-robin, Bradley-Terry
and reference, at group sizes 4, 8 and 16.

Every step judges ``--groups`` groups of ``n`` distinct candidates through the judging core
(:class:`~trl_grrm.judging.JudgeRunner`) and an OpenAI-compatible engine talking to the local test judge server
(:class:`~trl_grrm.testing.judge_server.JudgeServer`): GQM answers for the GQM judge, verdict-token log-probabilities
for the GRAM judge of the three pairwise schemes (both orders). The server answers instantly, so the wall time is the
package's own cost plus HTTP on 127.0.0.1, not a model's; the call counts are what a real judge would get.

Checks printed at the end:

* Bradley-Terry calls at n=16 are at most ``2.5 * n * log2(n)`` (= 160);
* GQM calls grow about linearly: calls per candidate stay within 25% of each other across the sizes above
  ``max_candidates_per_call``.

    python benchmarks/judge_calls.py [--groups 8] [--sizes 4 8 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from trl_grrm.engines import EngineConfig, build_engine  # noqa: E402
from trl_grrm.judging import GQMJudge, JudgeGroup, JudgeRunner, JudgeTask, attempt_counts  # noqa: E402
from trl_grrm.judging.judges import GRAMJudge  # noqa: E402
from trl_grrm.testing.judge_server import JudgeServer  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog while seven tired cats watch from an old wooden fence".split()


def make_groups(num_groups: int, n: int) -> list[JudgeGroup]:
    """Groups of ``n`` distinct candidates of different lengths (the test server scores by length)."""
    groups = []
    for g in range(num_groups):
        candidates = [" ".join(WORDS[(g + i) % len(WORDS) : (g + i) % len(WORDS) + 1 + i % 6]) + f" #{i}"
                      for i in range(n)]  # fmt: skip
        groups.append(JudgeGroup(f"Source sentence {g}.", candidates, "en", "de", key=g))
    return groups


def judges() -> dict[str, object]:
    return {
        "gqm (subgroups)": GQMJudge(),
        "round_robin": GRAMJudge("round_robin"),
        "bradley_terry": GRAMJudge("bradley_terry"),
        "reference": GRAMJudge("reference"),
    }


def measure(judge, engine, groups: list[JudgeGroup], repeats: int) -> tuple[float, float, int]:
    """(judge calls per group, median wall seconds per step, groups left unjudged)."""
    times, calls, unjudged = [], 0, 0
    for _ in range(repeats):
        tasks = [JudgeTask(group) for group in groups]
        started = time.perf_counter()
        JudgeRunner(engine).run(judge, tasks)
        times.append(time.perf_counter() - started)
        calls = attempt_counts([a for t in tasks for r in t.requests for a in r.attempts])["judge_calls"]
        unjudged = sum(t.scores is None for t in tasks)
    return calls / len(groups), statistics.median(times), unjudged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=8, help="groups per step")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per cell (median reported)")
    args = parser.parse_args()

    results: dict[tuple[str, int], tuple[float, float, int]] = {}
    with JudgeServer() as server:
        engine = build_engine(EngineConfig(model="judge", backend="openai", base_url=server.base_url,
                                           max_request_retries=0))  # fmt: skip
        try:
            for name, judge in judges().items():
                for n in args.sizes:
                    results[name, n] = measure(judge, engine, make_groups(args.groups, n), args.repeats)
        finally:
            engine.close()

    print(f"{args.groups} groups per step; calls = judge prompts sent (pairwise: both orders)\n")
    header = f"{'judge':<18}" + "".join(f"{'n=' + str(n) + ' calls/group':>20}{'s/step':>9}" for n in args.sizes)
    print(header)
    print("-" * len(header))
    for name in judges():
        row = f"{name:<18}"
        for n in args.sizes:
            per_group, seconds, unjudged = results[name, n]
            row += f"{per_group:>20.1f}{seconds:>9.3f}" + ("!" if unjudged else "")
        print(row)
    if any(results[key][2] for key in results):
        print("! some groups were not judged")

    print()
    if 16 in args.sizes:
        bt = results["bradley_terry", 16][0]
        bound = 2.5 * 16 * math.log2(16)
        print(f"Bradley-Terry at n=16: {bt:.0f} calls per group <= 2.5*n*log2(n) = {bound:.0f}: {bt <= bound}")
    large = [n for n in args.sizes if n > 4]
    if len(large) >= 2:
        per_candidate = [results["gqm (subgroups)", n][0] / n for n in large]
        linear = max(per_candidate) <= 1.25 * min(per_candidate)
        print(
            "GQM calls per candidate at n=" + ", ".join(map(str, large)) + ": "
            + ", ".join(f"{x:.2f}" for x in per_candidate) + f" -> about linear in n: {linear}"
        )  # fmt: skip


if __name__ == "__main__":
    main()

"""How well does a miniature judge score the policy's own samples, as GSPO asks it to? (diagnostic for issue 9)

Samples ``--samples`` translations of ``--prompts`` unseen sources from the policy (temperature 0.7, as in GSPO),
scores each group through the pipeline's judge reward (:func:`trl_grrm.mini.pipeline.judge_reward`: in-process vLLM,
language check, groups of 16 judged in subgroups of 4) and compares the rewards, on the 0-10 scale, with the oracle's
scores of the distinct Berun candidates: the pairwise accuracy on the pairs the oracle separates, the mean signed
difference, the share the judge over- or under-rates by 2 points or more, and the mean difference per oracle score. A
judge that ranks well but overrates the worst candidates teaches the policy those candidates' mistakes. Also the share
of groups the judge leaves without signal (rewards all equal, or unscored) beside the oracle's share on the same
groups: with ``--samples 4`` the zero-variance comparison of GSPO runs, on identical groups.

    .venv/bin/python benchmarks/mini_judge_on_policy.py                      # the shipped policy and judge
    .venv/bin/python benchmarks/mini_judge_on_policy.py --judge outputs/mini-repro/sqm_sft/model --style sqm

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_grrm.mini.assets import materialize_assets
    from trl_grrm.mini.pipeline import (
        LANGUAGE_CHECKS, SOURCE_LANGUAGE, TARGET_LANGUAGE, generate_translations, judge_reward, mt_messages,
        oracle_reward, sample_sources,
    )  # fmt: skip
    from trl_grrm.mini.task import berun_text
    from trl_grrm.ranking import pairwise_relations

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="policy model directory (default: the shipped policy)")
    parser.add_argument("--judge", help="judge model directory (default: the shipped GQM judge)")
    parser.add_argument("--style", default="gqm", choices=["gqm", "sqm"])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=777, help="seed of the sources (unseen by the pipeline's stages)")
    parser.add_argument("--candidate_orders", type=int, default=1,
                        help="orders each group of at most 4 is shown in (the reward's candidate_orders)")
    parser.add_argument("--language_check", default="whole", choices=sorted(LANGUAGE_CHECKS),
                        help="the judge reward's language check (reproduce-mini --language_check; the weaker start's "
                        "preset uses filter)")
    args = parser.parse_args()
    if args.policy is None or args.judge is None:
        shipped = materialize_assets()  # the demo's cache
        args.policy, args.judge = args.policy or str(shipped["policy"]), args.judge or str(shipped["judge"])

    sources = sample_sources(args.prompts, args.seed)
    samples = generate_translations(AutoModelForCausalLM.from_pretrained(args.policy),
                                    AutoTokenizer.from_pretrained(args.policy), sources, 0.7, args.samples, seed=3)
    rows = [(source, text or "") for source, texts in zip(sources, samples) for text in texts]
    reward = judge_reward(args.judge, args.style, "vllm", args.samples, language_check=args.language_check,
                          candidate_orders=args.candidate_orders)  # more than 1 with sqm: the config names the error
    completions = [[{"role": "assistant", "content": text}] for _, text in rows]
    oracle_rewards = oracle_reward(completions, [source for source, _ in rows])
    try:
        rewards = reward(
            prompts=[mt_messages(source) for source, _ in rows], completions=completions,
            src_text=[source for source, _ in rows], src_lang=[SOURCE_LANGUAGE] * len(rows),
            trg_lang=[TARGET_LANGUAGE] * len(rows),
        )  # fmt: skip
    finally:
        reward.engine.close()

    agree = separated = 0
    # Groups whose rewards are all equal (or that the judge left unscored), by who leaves them so: a judge may give
    # signal where the oracle has none (splitting equally good candidates) and take it where the oracle has some.
    no_signal = {"both": 0, "judge only": 0, "oracle only": 0}
    differences: list[float] = []
    by_oracle: dict[int, list[float]] = defaultdict(list)
    for group in range(args.prompts):
        indices = range(group * args.samples, (group + 1) * args.samples)
        judged_group = [rewards[i] for i in indices]
        unscored = any(value is None or value != value for value in judged_group)
        judge_flat = unscored or len(set(judged_group)) == 1
        oracle_flat = len({oracle_rewards[i] for i in indices}) == 1
        if judge_flat or oracle_flat:
            no_signal["both" if judge_flat and oracle_flat else "judge only" if judge_flat else "oracle only"] += 1
        scored: dict[str, tuple[float, int]] = {}  # distinct Berun candidate -> (judged, oracle), 0-10
        for index in indices:
            text, value = rows[index][1], rewards[index]
            if berun_text(text) is not None and value is not None and value == value:  # NaN: the group was unjudged
                scored[text] = (10 * value, round(10 * oracle_rewards[index]))
        judged_relations = pairwise_relations({text: judged for text, (judged, _) in scored.items()})
        for pair, relation in pairwise_relations({text: oracle for text, (_, oracle) in scored.items()}).items():
            if relation:  # a judged tie counts as wrong
                separated += 1
                agree += judged_relations[pair] == relation
        for judged, oracle in scored.values():
            differences.append(judged - oracle)
            by_oracle[oracle].append(judged - oracle)
    count = max(len(differences), 1)
    print(json.dumps({
        "judge": args.judge, "style": args.style, "candidate_orders": args.candidate_orders,
        "language_check": args.language_check,
        "distinct_candidates": len(differences),
        "pairwise_accuracy": round(agree / max(separated, 1), 3), "separated_pairs": separated,
        "mean_judged_minus_oracle": round(sum(differences) / count, 2),
        "overrated_by_2_or_more": round(sum(d >= 2 for d in differences) / count, 3),
        "underrated_by_2_or_more": round(sum(d <= -2 for d in differences) / count, 3),
        "mean_difference_by_oracle_score": {k: round(sum(v) / len(v), 2) for k, v in sorted(by_oracle.items())},
        "groups_without_signal": round((no_signal["both"] + no_signal["judge only"]) / args.prompts, 3),
        "groups_without_signal_oracle": round((no_signal["both"] + no_signal["oracle only"]) / args.prompts, 3),
        "groups_without_signal_by": {k: round(v / args.prompts, 3) for k, v in no_signal.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()

"""The judge's view in TRL's completions table: real ``GRPOTrainer`` runs write ``completions_*.parquet`` with the
columns the reward functions add through ``log_extra``, checked row by row against what the judge answered."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from trl_grrm.formats.gqm import CANDIDATE_IDS, format_gqm_answer, parse_gqm_prompt
from trl_grrm.formats.mt import completion_text, extract_full
from trl_grrm.rewards import GroupRelativeRewardFunction, PairwiseRewardFunction
from trl_grrm.testing.judge_server import JudgeServer, length_score
from trl_grrm.testing.scripted_engine import ScriptedEngine

GROUP = 4


def run_grpo(model_dir, output_dir, reward, columns, steps=2):
    """``steps`` GRPO steps of 2 prompts x ``GROUP`` completions, with completion logging on."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=2 * GROUP, num_generations=GROUP,
        max_completion_length=6, max_steps=steps, logging_steps=1, log_completions=True, num_completions_to_print=2,
        learning_rate=0.05, use_cpu=True, report_to="none", save_strategy="no", seed=11, temperature=1.5,
    )  # fmt: skip
    trainer = GRPOTrainer(model=model_dir, reward_funcs=[reward], args=args, train_dataset=Dataset.from_dict(columns))
    trainer.train()
    tables = sorted((output_dir / "completions").glob("completions_*.parquet"))
    assert len(tables) == steps
    return trainer, [pd.read_parquet(table) for table in tables]


def ranking_line(scores: list[float | None]) -> str:
    """The group's order by score as the reward functions write it (#k: the k-th completion, ties with '=')."""
    tiers: dict[float, list[str]] = {}
    for position, score in enumerate(scores, start=1):
        if score is not None:
            tiers.setdefault(score, []).append(f"#{position}")
    return " > ".join(" = ".join(tiers[s]) for s in sorted(tiers, reverse=True))


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def test_grrm_columns_hold_the_judges_scores(tiny_model_dir, tmp_path):
    replies: dict[str, dict[str, int]] = {}  # source -> {translation: score}, as the judge answered

    def answer(prompt, attempt, sampling):
        shown = parse_gqm_prompt(prompt)
        scores = {text: len(text) % 11 for text in shown.candidates}
        replies.setdefault(shown.source_text, {}).update(scores)
        return format_gqm_answer("scripted", {cid: scores[text] for cid, text in zip(CANDIDATE_IDS, shown.candidates)})

    engine = ScriptedEngine(answer)
    reward = GroupRelativeRewardFunction(
        engine=engine, judge_model="judge", backend="openai", base_url="http://127.0.0.1:9/v1", extractor="full",
        num_generations=GROUP, unjudged_reward=-0.5,
    )  # fmt: skip
    sources = [f"Sentence {i}." for i in range(4)]
    columns = {"prompt": [f"Translate to German: {s}" for s in sources], "src_text": sources,
               "src_lang": ["en"] * 4, "trg_lang": ["de"] * 4}  # fmt: skip
    trainer, frames = run_grpo(tiny_model_dir, tmp_path / "run", reward, columns)

    judged_rows = 0
    for frame in frames:
        for name in ("translation", "judge_score", "unjudged_reason", "ranking"):
            assert f"grrm_judge/{name}" in frame.columns
        assert len(frame) == 2 * GROUP
        for start in range(0, len(frame), GROUP):
            group = frame.iloc[start : start + GROUP]
            source = columns["src_text"][columns["prompt"].index(group["prompt"].iloc[0])]
            texts = [extract_full(completion_text(c)) for c in group["completion"]]
            assert [None if missing(t) else t for t in group["grrm_judge/translation"]] == texts
            answered = replies.get(source)
            # Each row's score is the judge's reply for its text; the group's line orders them.
            expected = [None if t is None or answered is None else float(answered[t]) for t in texts]
            assert [None if missing(s) else s for s in group["grrm_judge/judge_score"]] == expected
            assert list(group["grrm_judge/ranking"]) == [ranking_line(expected) if answered else ""] * GROUP
            for text, score, reason, reward_value in zip(texts, expected, group["grrm_judge/unjudged_reason"],
                                                         group["grrm_judge"]):  # fmt: skip
                if text is None:
                    assert reason == "invalid_completion" and reward_value == 0.0
                elif answered is None:
                    assert reason == "too_few_distinct" and reward_value == -0.5
                else:
                    assert reason == "" and reward_value == pytest.approx(score * 0.1)
                    judged_rows += 1
    assert judged_rows >= GROUP  # the run produced judged groups, not only fallbacks
    assert len(engine.prompts) == len(replies)  # one judge call per judged group
    # The console table is printed from the same columns.
    assert {"grrm_judge/translation", "grrm_judge/judge_score", "grrm_judge/unjudged_reason",
            "grrm_judge/ranking"} <= set(trainer._logs["extra"])  # fmt: skip


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_pairwise_columns_hold_the_win_probabilities(tiny_model_dir, tmp_path):
    questions = [f"Tell me about topic {i}." for i in range(4)]
    audit = tmp_path / "audit.jsonl"
    with JudgeServer() as server:
        reward = PairwiseRewardFunction(
            judge_model="judge", backend="openai", base_url=server.base_url, max_request_retries=0,
            num_generations=GROUP, audit_log_path=str(audit),
        )  # fmt: skip
        _, frames = run_grpo(tiny_model_dir, tmp_path / "run", reward, {"prompt": questions}, steps=1)
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    [frame] = frames
    assert len(records) == 2 and any(r["scores"] is not None for r in records)  # two groups, at least one judged
    for name in ("response", "judge_score", "unjudged_reason", "ranking"):
        assert f"pairwise_judge/{name}" in frame.columns
    for record, start in zip(records, range(0, len(frame), GROUP)):
        group = frame.iloc[start : start + GROUP]
        texts = [extract_full(completion_text(c)) for c in group["completion"]]
        assert [None if missing(t) else t for t in group["pairwise_judge/response"]] == texts
        # The server's verdicts: P(x beats y) = sigmoid(length_score(x) - length_score(y)); round robin averages them.
        distinct = record["candidates"]
        wins = [np.mean([sigmoid(length_score("", x) - length_score("", y)) for y in distinct if y != x])
                for x in distinct] if len(distinct) > 1 else None  # fmt: skip
        expected = [None if m is None or wins is None else wins[m] for m in record["completion_candidate"]]
        scores = [None if missing(s) else s for s in group["pairwise_judge/judge_score"]]
        assert scores == pytest.approx(expected)
        assert list(group["pairwise_judge/ranking"]) == [ranking_line(scores) if wins else ""] * GROUP
        reasons = list(group["pairwise_judge/unjudged_reason"])
        assert reasons == ["invalid_completion" if t is None else ("" if wins else "too_few_distinct") for t in texts]

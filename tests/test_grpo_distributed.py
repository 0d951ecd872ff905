"""A real GRPOTrainer run, on 1 and 2 processes, with groups split across processes (batch 3, groups of 2)."""

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_command
from trl_grrm.formats.mt import completion_text, extract_full
from trl_grrm.testing.judge_server import length_score

SCRIPT = Path(__file__).parent / "scripts" / "grpo_with_judge.py"


@pytest.mark.slow
@pytest.mark.parametrize("num_processes", [1, 2])
def test_every_completion_gets_its_groups_judgment(num_processes, judge_server, tiny_model_dir, tmp_path):
    output_dir = tmp_path / "run"
    # --standalone: torchrun's rendezvous binds port 0 itself, so no port is picked here
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={num_processes}",
               "--standalone", SCRIPT, tiny_model_dir, judge_server.base_url, output_dir]
    run_command(command, timeout=900)
    num_requests = len(judge_server.requests)

    audit = [json.loads(line) for line in (output_dir / "judge_audit.jsonl").read_text().splitlines()]
    train = [r for r in audit if r["mode"] == "train"]
    evaluation = [r for r in audit if r["mode"] == "eval"]
    # Per step: 4 completions on 1 process, 3 per process on 2 (one group split); groups of 2. Eval: 3 prompts.
    groups_per_step = {1: 2, 2: 3}[num_processes]
    assert len(train) == 3 * groups_per_step
    assert len(evaluation) == 3
    for step in {r["step"] for r in train}:
        indices = sorted(r["group"] for r in train if r["step"] == step)
        assert indices == list(range(groups_per_step))  # each group of the step judged exactly once
    judged = [r for r in audit if r["unjudged_reason"] is None]
    assert all(len(r["attempts"]) == 1 for r in judged)
    assert num_requests == sum(len(r["attempts"]) for r in audit)

    # TRL's own record of what every completion got.
    tables = sorted((output_dir / "completions").glob("completions_*.parquet"))
    assert len(tables) == 3
    checked = 0
    for table in tables:
        frame = pd.read_parquet(table)
        assert len(frame) == 2 * groups_per_step
        for start in range(0, len(frame), 2):
            group = frame.iloc[start : start + 2]
            texts = [extract_full(completion_text(list(c) if not isinstance(c, str) else c)) for c in group["completion"]]
            distinct = len({" ".join(t.split()) for t in texts if t is not None})
            # Each process logged the judge's view of its own completions: the columns line up row by row.
            assert [None if t is None or t != t else t for t in group["grrm_judge/translation"]] == texts
            for text, reward, score in zip(texts, group["grrm_judge"], group["grrm_judge/judge_score"]):
                if not math.isnan(reward) and text is not None:
                    assert reward == pytest.approx(score * 0.1)
                if text is None:
                    assert reward == 0.0
                elif distinct < 2:
                    assert math.isnan(reward)
                else:
                    assert reward == pytest.approx(length_score("", text) * 0.1)
                    checked += 1
    assert checked >= 3 * groups_per_step

    history = json.loads((output_dir / "log_history.json").read_text())
    train_logs = [h for h in history if "grrm_judge/groups" in h]
    eval_logs = [h for h in history if "eval_grrm_judge/groups" in h]
    assert [h["grrm_judge/groups"] for h in train_logs] == [groups_per_step] * 3
    # 1 process: three eval batches of one group each (averaged per log); 2 processes: one batch of three groups.
    assert eval_logs and eval_logs[0]["eval_grrm_judge/groups"] == {1: 1, 2: 3}[num_processes]
    assert all(h["grrm_judge/judge_latency_s"] > 0 for h in train_logs)

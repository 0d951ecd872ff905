"""``trl-grrm eval-ranking --preferences``: preference files (prompt/chosen/rejected) judged in both orders, with
accuracy, inconsistency, position bias and a per-subset table; hand-computed expectations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trl_grrm.cli import main as cli_main
from trl_grrm.engines import SamplingSettings
from trl_grrm.evaluation.ranking import (
    PreferenceGroup,
    _Evaluation,
    groups_from_preferences,
    judge_groups,
    preference_judge,
    summarize_preferences,
)
from trl_grrm.formats.gqm import format_gqm_answer
from trl_grrm.testing.judge_server import JudgeServer
from trl_grrm.testing.scripted_engine import ScriptedEngine

# The judge server scores a response len(text) % 11 (GQM scores, and GRAM's P(A) = sigmoid(score_A - score_B)).
ROWS = [
    # 7 vs 2: chosen wins in both orders -> credit 1
    {"prompt": "What is 2+2?", "chosen": "Answer4", "rejected": "No", "subset": "chat"},
    # 3 vs 8: rejected wins -> credit 0
    {"prompt": "Is the sky blue?", "chosen": "Yes", "rejected": "Maybe so", "subset": "chat"},
    # 5 vs 5: a tie -> credit 0.5
    {"prompt": "Count to five.", "chosen": "12345", "rejected": "abcde", "subset": "math"},
    # 10 vs 1: chosen wins -> credit 1
    {"prompt": "Say ten.", "chosen": "ten chars!", "rejected": "x", "subset": "math"},
]
LANGUAGES = {"src_lang": "en", "trg_lang": "de"}
# Hand-worked: per subset the mean credit; strict verdicts 6 (rows 0, 1, 3 in both orders), 3 of them for the
# response shown first (each row's winner is first in exactly one order): no position bias.
EXPECTED = {
    "overall": {"pairs": 4, "accuracy": (1 + 0 + 0.5 + 1) / 4, "inconsistency": 0.0, "position_bias": 0.0,
                "first_position_rate": 0.5, "tie_rate": 2 / 8, "judged": 8, "evaluations": 8},
    "chat": {"pairs": 2, "accuracy": 0.5, "inconsistency": 0.0, "position_bias": 0.0, "tie_rate": 0.0},
    "math": {"pairs": 2, "accuracy": 0.75, "inconsistency": 0.0, "position_bias": 0.0, "tie_rate": 0.5},
}  # fmt: skip


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_cli(data: Path, out: Path, *extra: str, exit_code: int = 0) -> dict:
    rc = cli_main(["eval-ranking", "--preferences", "--dataset", str(data), "--output", str(out), "--no-progress",
                   *extra])  # fmt: skip
    assert rc == exit_code
    return json.loads(out.read_text()) if exit_code != 2 else {}


def assert_expected(metrics: dict) -> None:
    for name, expected in EXPECTED.items():
        got = metrics["overall"] if name == "overall" else metrics["by_subset"][name]
        for key, value in expected.items():
            assert got[key] == pytest.approx(value), (name, key)


@pytest.mark.parametrize("judge", ["gqm", "gram"])
def test_order_blind_judge_exact_accuracy_per_subset(judge, tmp_path, capsys):
    data = write_rows(tmp_path / "prefs.jsonl", [{**row, **LANGUAGES} for row in ROWS])
    with JudgeServer() as server:
        result = run_cli(data, tmp_path / "out.json", "--judge", judge, "--backend", "openai", "--model", "judge",
                         "--base-url", server.base_url)  # fmt: skip
        # Two orders per pair, one prompt each (the pairwise judge asks one order per evaluation).
        assert len(server.requests) == 8
    assert_expected(result["metrics"])
    printed = capsys.readouterr().out
    assert "chat" in printed and "math" in printed and "62.5" in printed  # the overall accuracy, in %


def test_judge_that_always_picks_the_first_response_is_fully_inconsistent(tmp_path):
    data = write_rows(tmp_path / "prefs.jsonl", ROWS)
    always_a = {"A": math.log(0.8), "B": math.log(0.2)}
    with JudgeServer(token_logprobs=lambda prompt: always_a) as server:
        result = run_cli(data, tmp_path / "out.json", "--judge", "gram", "--backend", "openai", "--model", "judge",
                         "--base-url", server.base_url)  # fmt: skip
    overall = result["metrics"]["overall"]
    # Chosen first: always right; chosen second: always wrong. Every pair flips; the first response always wins.
    assert overall["accuracy"] == 0.5
    assert overall["accuracy_chosen_first"] == 1.0 and overall["accuracy_chosen_second"] == 0.0
    assert overall["inconsistency"] == 1.0
    assert overall["first_position_rate"] == 1.0 and overall["position_bias"] == 0.5


def test_unjudged_orders_count_zero_and_are_left_out_of_inconsistency():
    # A GQM judge that scores by length but cannot answer when "Maybe so" is shown first.
    def answer(prompt, attempt, sampling):
        from trl_grrm.formats.gqm import parse_gqm_prompt

        shown = parse_gqm_prompt(prompt).candidates
        if shown[0] == "Maybe so":
            return "no idea"
        return format_gqm_answer("ok", {"AB"[i]: len(text) % 11 for i, text in enumerate(shown)})

    groups = groups_from_preferences([{**row, **LANGUAGES} for row in ROWS])
    evaluations = judge_groups(groups, preference_judge("gqm"), ScriptedEngine(answer), SamplingSettings(),
                               permutations=2, max_retries=0)  # fmt: skip
    m = summarize_preferences(evaluations)
    assert (m["judged"], m["evaluations"]) == (7, 8) and m["failures"]["parse_failed"] == 1
    # Credits: row0 1+1, row1 0 + unjudged 0, row2 0.5+0.5, row3 1+1 -> 5 over 8 orders, 5 over 7 judged.
    assert m["accuracy"] == pytest.approx(5 / 8) and m["accuracy_judged"] == pytest.approx(5 / 7)
    assert m["inconsistency"] == 0.0  # row 1, judged in one order only, is left out
    # Strict verdicts: rows 0 and 3 twice, row 1 once (rejected shown second, wins): first wins 2 of 5.
    assert m["first_position_rate"] == pytest.approx(2 / 5)


def test_summary_of_a_perfect_judge():
    group = PreferenceGroup(0, "q", ["good", "bad"], subset="s")
    evaluations = [_Evaluation(group, [0, 1], scores=[0.9, 0.1]),
                   _Evaluation(group, [1, 0], scores=[0.8, 0.2], permutation=1)]  # fmt: skip
    m = summarize_preferences(evaluations)
    assert (m["accuracy"], m["inconsistency"], m["position_bias"], m["tie_rate"]) == (1.0, 0.0, 0.0, 0.0)


def test_pairwise_judges_ask_one_order_per_evaluation():
    judge = preference_judge("gram")
    assert judge.both_orders is False
    assert len(judge.prompts(PreferenceGroup(0, "q", ["a", "b"]), ["a", "b"])) == 1


@pytest.mark.parametrize(("rows", "extra", "message"), [
    ([{"prompt": "p", "chosen": "a"}], ("--judge", "gram"), "lacks preference column(s) ['rejected']"),
    ([{"prompt": "p", "chosen": "a", "rejected": ""}], ("--judge", "gram"), "row 0: column 'rejected'"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b"}], ("--judge", "gqm"), "needs src_lang and trg_lang"),
])  # fmt: skip
def test_bad_preference_files_exit_2_naming_the_problem(rows, extra, message, tmp_path, capsys):
    data = write_rows(tmp_path / "prefs.jsonl", rows)
    run_cli(data, tmp_path / "out.json", *extra, "--backend", "openai", "--model", "judge",
            "--base-url", "http://127.0.0.1:9/v1", exit_code=2)  # fmt: skip
    assert message in capsys.readouterr().err


def test_chat_formatted_cells_use_the_last_message():
    [group] = groups_from_preferences([{
        "prompt": [{"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
    }])  # fmt: skip
    assert (group.source_text, group.candidates, group.subset) == ("Hi?", ["Hello!", "Go away."], "all")

"""``eval-ranking`` and ``eval-mt`` tell a judge that never answered from one that answered badly, and say so in
their table, their JSON and their exit status (0: judged; 1: nothing could be judged; 2: bad arguments or a judge
configuration error).

They run against the local judge server (right and wrong model names, garbage answers), the fault-injecting server,
a port nobody listens on, and, for outcomes no server produces on demand, an in-memory scripted engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import dead_url
from trl_grrm.engines import JudgeConfigurationError, JudgeOutput
from trl_grrm.evaluation import mt as eval_mt
from trl_grrm.evaluation import ranking as eval_ranking
from trl_grrm.formats.gqm import format_gqm_answer, parse_gqm_prompt
from trl_grrm.testing.judge_server import JudgeServer
from trl_grrm.testing.scripted_engine import ScriptedEngine

# The judge server scores a candidate len(text) % 11.
ROWS = [
    # judge 5, 2 -> right: accuracy 1
    {"src_text": "Hello.", "src_lang": "en", "trg_lang": "de", "mt_texts": ["Hallo", "Hi"], "scores": [8, 1]},
    # judge 3, 6 -> reversed: accuracy 0
    {"src_text": "Thanks.", "src_lang": "en", "trg_lang": "fr", "mt_texts": ["Mer", "Merci."], "scores": [8, 1]},
    # judge 1, 4, 2 -> (A,B) right, (A,C) right, (B,C) wrong: accuracy 2/3
    {"src_text": "Hi.", "src_lang": "en", "trg_lang": "fr", "mt_texts": ["S", "Salu", "Sa"], "scores": [0, 5, 6]},
]  # fmt: skip
FAST = ["--request-retries", "1", "--request-backoff", "0.01", "--request-timeout", "5", "--no-progress"]


@pytest.fixture
def ranking_file(tmp_path) -> Path:
    path = tmp_path / "ranking.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


@pytest.fixture
def server(judge_server):
    return judge_server  # tests/conftest.py


def run_ranking(capsys, ranking_file: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    code = eval_ranking.main(["--dataset", str(ranking_file), "--output", str(out), "--backend", "openai", *FAST,
                              *extra])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_row(printed: str, name: str) -> list[str]:
    """The cells of the first table row whose first cell is ``name``."""
    for line in printed.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no table row {name!r} in:\n{printed}")


def table_header(printed: str) -> list[str]:
    for line in printed.splitlines():
        if "┃" in line and "pair" in line:
            return [cell.strip() for cell in line.strip().strip("┃").split("┃")]
    raise AssertionError(f"no table header in:\n{printed}")


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("trl-grrm")]


# -- eval-ranking against real servers ----------------------------------------------------------------------------


def test_eval_ranking_with_a_wrong_model_name_stops_at_once_naming_url_model_and_served_models(
    ranking_file, server, tmp_path, capsys
):
    out = tmp_path / "out.json"
    code, printed, err = run_ranking(capsys, ranking_file, out, "--base-url", server.base_url, "--model", "grrm",
                                     "--permutations", "3")  # fmt: skip
    assert code == 2
    [line] = error_lines(err)
    assert server.base_url in line and "'grrm'" in line and "judge" in line.split("serves")[1]
    assert "retry" not in err.lower()
    assert not out.exists() and not out.with_suffix(".png").exists() and "acc" not in printed


def test_eval_ranking_with_a_dead_url_reports_unavailable_not_a_bad_judge(ranking_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    url = dead_url()
    code, printed, err = run_ranking(capsys, ranking_file, out, "--base-url", url, "--model", "judge",
                                     "--permutations", "2")  # fmt: skip
    assert code == 1
    [line] = error_lines(err)
    assert "no group could be judged" in line and "6 unavailable" in line and url in line
    overall = json.loads(out.read_text())["metrics"]["overall"]
    assert overall["accuracy"] is None and overall["accuracy_tie_lenient"] is None
    assert overall["accuracy_parsed"] is None and overall["per_permutation"]["accuracy"] == [None, None]
    assert overall["failures"] == {"unavailable": 6, "prompt_too_long": 0, "truncated": 0, "parse_failed": 0}
    assert (overall["judged"], overall["evaluations"], overall["parse_failure_rate"]) == (0, 6, 0.0)
    assert overall["unjudged_rate"] == 1.0
    header, row = table_header(printed), table_row(printed, "overall")
    cell = dict(zip(header, row))
    assert (cell["acc"], cell["tie-lenient"], cell["acc parsed"]) == ("-", "-", "-")
    assert (cell["judged"], cell["unavail."], cell["parse fail"], cell["truncated"], cell["too long"]) == (
        "0/6", "6", "0", "0", "0")  # fmt: skip
    assert not out.with_suffix(".png").exists()  # no plot of numbers that do not exist


def test_eval_ranking_with_a_judge_answering_garbage_reports_parse_failures(ranking_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    with JudgeServer(port=0, garbage_below_temperature=5.0, stop_after_s=120) as server:
        code, printed, err = run_ranking(capsys, ranking_file, out, "--base-url", server.base_url, "--model", "judge",
                                         "--max-retries", "1")  # fmt: skip
        asked = len(server.requests)
    assert code == 1 and asked == 6  # 3 groups, each asked twice
    [line] = error_lines(err)
    assert "no group could be judged" in line and "3 parse_failed" in line and "unavailable" not in line
    overall = json.loads(out.read_text())["metrics"]["overall"]
    assert overall["accuracy"] is None and overall["parse_failure_rate"] == 1.0
    assert overall["failures"] == {"unavailable": 0, "prompt_too_long": 0, "truncated": 0, "parse_failed": 3}
    cell = dict(zip(table_header(printed), table_row(printed, "overall")))
    assert (cell["acc"], cell["judged"], cell["parse fail"], cell["unavail."]) == ("-", "0/3", "3", "0")


def test_eval_ranking_with_html_replies_reports_the_judge_unavailable(ranking_file, tmp_path, capsys):
    from trl_grrm.testing.fault_server import FaultyJudgeServer

    out = tmp_path / "out.json"
    with FaultyJudgeServer("html", stop_after_s=120) as server:
        code, _, err = run_ranking(capsys, ranking_file, out, "--base-url", server.base_url, "--model", "judge")
    assert code == 1
    assert "3 unavailable" in error_lines(err)[0]
    overall = json.loads(out.read_text())["metrics"]["overall"]
    assert overall["failures"]["unavailable"] == 3 and overall["request_retries"] == 3  # one retry per request


def test_eval_ranking_with_a_wrong_base_url_path_stops_at_once(ranking_file, tmp_path, capsys):
    from trl_grrm.testing.fault_server import FaultyJudgeServer

    out = tmp_path / "out.json"
    with FaultyJudgeServer("not_found", stop_after_s=120) as server:  # 404 on every route, as for a wrong path
        code, _, err = run_ranking(capsys, ranking_file, out, "--base-url", server.base_url, "--model", "judge")
        asked = server.attempts
    assert code == 2 and asked == 3 and not out.exists()  # the first round only: no retries
    [line] = error_lines(err)
    assert server.base_url in line and "'judge'" in line and "base URL may be wrong" in line


def test_eval_ranking_as_a_real_subprocess_with_a_wrong_model(ranking_file, server, tmp_path):
    trl_grrm = Path(sys.executable).parent / "trl-grrm"
    out = tmp_path / "out.json"
    run = subprocess.run(
        [str(trl_grrm), "eval-ranking", "--dataset", str(ranking_file), "--output", str(out), "--backend", "openai",
         "--base-url", server.base_url, "--model", "grrm", *FAST],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    [line] = error_lines(run.stderr)
    assert server.base_url in line and "'grrm'" in line and "serves: judge" in line
    assert run.stdout == "" and not out.exists()


# -- eval-ranking with outcomes scripted per group ----------------------------------------------------------------


def scripted_ranking(monkeypatch, answer) -> ScriptedEngine:
    engine = ScriptedEngine(answer)
    monkeypatch.setattr(eval_ranking, "build_engine", lambda args: engine)
    return engine


def length_answer(prompt: str) -> str:
    candidates = parse_gqm_prompt(prompt).candidates
    return format_gqm_answer("ok", {cid: len(text) % 11 for cid, text in zip("ABC", candidates)})


def test_each_failure_is_counted_on_its_own_and_unjudged_groups_count_zero(monkeypatch, tmp_path, capsys):
    rows = ROWS + [
        {"src_text": "Down.", "src_lang": "en", "trg_lang": "de", "mt_texts": ["a", "bb"], "scores": [1, 2]},
        {"src_text": "Long.", "src_lang": "en", "trg_lang": "de", "mt_texts": ["a", "bb"], "scores": [1, 2]},
        {"src_text": "Cut.", "src_lang": "en", "trg_lang": "de", "mt_texts": ["a", "bb"], "scores": [1, 2]},
        {"src_text": "Noise.", "src_lang": "en", "trg_lang": "de", "mt_texts": ["a", "bb"], "scores": [1, 2]},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    def answer(prompt, attempt, sampling):
        source = parse_gqm_prompt(prompt).source_text
        if source == "Down.":
            return JudgeOutput(text=None, error="unavailable", detail="503 Service Unavailable", request_retries=1)
        if source == "Long.":
            return JudgeOutput(text=None, error="prompt_too_long", detail="maximum context length")
        if source == "Cut.":
            return JudgeOutput(text="A: 1, B: 1", error="truncated", finish_reason="length")
        if source == "Noise.":
            return "no scores here"
        return length_answer(prompt)

    engine = scripted_ranking(monkeypatch, answer)
    out = tmp_path / "out.json"
    code, printed, err = run_ranking(capsys, path, out, "--model", "judge", "--base-url", "http://unused/v1")
    assert code == 0 and error_lines(err) == []
    overall = json.loads(out.read_text())["metrics"]["overall"]
    assert overall["failures"] == {"unavailable": 1, "prompt_too_long": 1, "truncated": 1, "parse_failed": 1}
    # The paper's accuracy counts the 4 unjudged groups 0; accuracy_parsed leaves them out.
    assert overall["accuracy"] == pytest.approx((1 + 0 + 2 / 3) / 7)
    assert overall["accuracy_parsed"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert (overall["judged"], overall["unjudged_rate"]) == (3, pytest.approx(4 / 7))
    assert overall["parse_failure_rate"] == pytest.approx(1 / 7) and overall["request_retries"] == 1
    # truncated and unparsable answers were asked 3 times (2 re-asks), the engine errors once
    assert engine.prompts.count(engine.prompts[0]) == 1 and len(engine.prompts) == 3 + 1 + 1 + 3 + 3
    cell = dict(zip(table_header(printed), table_row(printed, "overall")))
    assert (cell["judged"], cell["unavail."], cell["too long"], cell["truncated"], cell["parse fail"]) == (
        "3/7", "1", "1", "1", "1")  # fmt: skip
    assert cell["acc"] == f"{100 * (1 + 2 / 3) / 7:.1f}" and cell["acc parsed"] == f"{100 * (1 + 2 / 3) / 3:.1f}"


def test_truncated_answers_are_asked_again_in_eval_ranking(monkeypatch, tmp_path, ranking_file, capsys):
    def answer(prompt, attempt, sampling):
        if attempt == 0:  # what is left of the cut answer parses (all ties), but it is not a judgment
            ids = "ABC"[: len(parse_gqm_prompt(prompt).candidates)]
            return JudgeOutput(text="### Scores:\n" + ", ".join(f"{c}: 1" for c in ids), error="truncated",
                               finish_reason="length")
        return length_answer(prompt)

    scripted_ranking(monkeypatch, answer)
    out = tmp_path / "out.json"
    code, _, _ = run_ranking(capsys, ranking_file, out, "--model", "judge", "--base-url", "http://unused/v1")
    assert code == 0
    result = json.loads(out.read_text())
    overall = result["metrics"]["overall"]
    assert overall["accuracy"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert overall["failures"]["truncated"] == 0 and overall["truncated_answers"] == 3 and overall["retries"] == 3
    first, second = result["groups"][0]["evaluations"][0]["requests"][0]["attempts"]
    assert (first["error"], first["truncated"], first["finish_reason"]) == ("truncated", True, "length")
    assert "parsed" not in first and second["parsed"]["scores"] == [5, 2]


def test_a_configuration_error_from_any_engine_stops_eval_ranking(monkeypatch, ranking_file, tmp_path, capsys):
    def refuse(prompt, attempt, sampling):
        raise JudgeConfigurationError("The judge server at http://x/v1 refused the request for model 'm' with 401.")

    engine = scripted_ranking(monkeypatch, refuse)
    out = tmp_path / "out.json"
    code, printed, err = run_ranking(capsys, ranking_file, out, "--model", "m", "--base-url", "http://x/v1")
    assert code == 2 and engine.calls == 1 and engine.closed and not out.exists()
    assert error_lines(err) == [
        "trl-grrm eval-ranking: error: The judge server at http://x/v1 refused the request for model 'm' with 401."
    ]


# -- eval-mt: its judge failures reach its summary, table and exit status -----------------------------------------

MT_ROWS = [
    {"src_text": "Hello world.", "src_lang": "en", "trg_lang": "de", "trg_text": "Hallo Welt."},
    {"src_text": "Good night.", "src_lang": "en", "trg_lang": "de", "trg_text": "Gute Nacht."},
    {"src_text": "Thank you.", "src_lang": "en", "trg_lang": "fr", "trg_text": "Merci."},
]
# What the policy stand-in answers (the judge is real): two translations differ from the reference.
MT_ANSWERS = {"Hello world.": "```\nHallo, Welt!\n```", "Good night.": "```\nGute Nacht.\n```",
              "Thank you.": "```\nMerci beaucoup.\n```"}  # fmt: skip


@pytest.fixture
def mt_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "mt.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in MT_ROWS))

    def policy(model, prompts, settings, dtype="auto", device=None):
        return [[next(a for s, a in MT_ANSWERS.items() if s in prompt)] * settings.num_samples for prompt in prompts]

    monkeypatch.setattr(eval_mt, "generate_transformers", policy)
    return path


def run_mt(capsys, mt_file: Path, out: Path, judge_url: str, *extra: str, model: str = "judge") -> tuple[int, str, str]:
    kwargs = {"max_request_retries": 1, "request_backoff_seconds": 0.01, "request_timeout": 5.0}
    code = eval_mt.main([
        "--model", "policy", "--data", str(mt_file), "--engine", "transformers", "--no-comet", "--output", str(out),
        "--judge-model", model, "--judge-base-url", judge_url, "--judge-kwargs", json.dumps(kwargs), *extra,
    ])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_mt_judges_through_the_reward_function(mt_file, server, tmp_path, capsys):
    out = tmp_path / "out.json"
    code, printed, err = run_mt(capsys, mt_file, out, server.base_url)
    assert code == 0 and error_lines(err) == []
    judge = json.loads(out.read_text())["judge"]
    # "Gute Nacht." equals its reference: a tie without a judge call; the two others are judged.
    assert (judge["judged_groups"], judge["unjudged_groups"], judge["ties_identical"]) == (2, 0, 1)
    assert judge["failures"] == {"unavailable": 0, "prompt_too_long": 0, "truncated": 0, "parse_failed": 0}
    assert "judge: 2 of 2 groups judged" in printed


def test_eval_mt_with_a_dead_judge_url_exits_1_and_counts_unavailable(mt_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    url = dead_url()
    code, printed, err = run_mt(capsys, mt_file, out, url)
    assert code == 1
    [line] = error_lines(err)
    assert "no item could be judged" in line and "2 unavailable" in line and url in line
    result = json.loads(out.read_text())
    judge = result["judge"]
    assert (judge["judged_groups"], judge["unjudged_groups"]) == (0, 2)
    assert judge["failures"] == {"unavailable": 2, "prompt_too_long": 0, "truncated": 0, "parse_failed": 0}
    assert judge["request_retries"] == 2
    assert result["pairs"]["en-de"]["judge_unjudged"] == 1 and result["pairs"]["en-fr"]["judge_unjudged"] == 1
    assert "judge: 0 of 2 groups judged (2 unavailable)" in printed
    cell = dict(zip(table_header(printed), table_row(printed, "en-fr")))
    assert (cell["judge hyp"], cell["win vs ref"], cell["judge failed"]) == ("-", "-", "1")


def test_eval_mt_with_a_judge_answering_garbage_exits_1_with_parse_failures(mt_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    with JudgeServer(port=0, garbage_below_temperature=5.0, stop_after_s=120) as server:
        code, _, err = run_mt(capsys, mt_file, out, server.base_url, "--judge-max-parse-retries", "1")
    assert code == 1
    assert "2 parse_failed" in error_lines(err)[0]
    assert json.loads(out.read_text())["judge"]["failures"]["parse_failed"] == 2


def test_eval_mt_with_a_wrong_judge_model_stops_with_one_message(mt_file, server, tmp_path, capsys):
    out = tmp_path / "out.json"
    code, printed, err = run_mt(capsys, mt_file, out, server.base_url, model="grrm")
    assert code == 2 and not out.exists()
    [line] = error_lines(err)
    assert line.startswith("trl-grrm eval-mt: error: ") and server.base_url in line and "'grrm'" in line
    assert "serves: judge" in line and "retry" not in err.lower()

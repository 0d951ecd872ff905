"""MT data builders (GRPO prompts, Cross-Lingual Augmentation, SFT) and `trl-grrm eval-mt` with real engines."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from trl_grrm.cli import main as cli_main
from trl_grrm.data.mt_builders import (
    BUNDLED_SAMPLE,
    build_mt_rl_dataset,
    build_mt_sft_dataset,
    cross_lingual_augment,
    load_mt_rows,
)
from trl_grrm.formats.mt import build_mt_prompt
from trl_grrm.languages import TOWER_LANGUAGES


REPO = Path(__file__).resolve().parents[1]

ROWS = [
    {"src_text": "你好。", "src_lang": "zh", "trg_lang": "en", "trg_text": "Hello."},
    {"src_text": "Guten Morgen.", "src_lang": "de", "trg_lang": "en", "trg_text": "Good morning."},
    {"src_text": "Good night.", "src_lang": "en", "trg_lang": "fr", "trg_text": "Bonne nuit."},
    {"src_text": "ありがとう。", "src_lang": "ja", "trg_lang": "en", "trg_text": "Thank you."},  # ja: outside the pool
    {"src_text": "Habari.", "src_lang": "Swahili", "trg_lang": "Klingon", "trg_text": "?"},  # both outside the pool
    {"src_text": "早上好。", "src_lang": "zh-CN", "trg_lang": "de", "trg_text": "Guten Morgen."},  # region code
]


def base(code):
    return code.replace("_", "-").split("-")[0].lower()


# -- the bundled sample --------------------------------------------------------------------------------------------


def test_bundled_sample_is_usable():
    rows = [json.loads(line) for line in BUNDLED_SAMPLE.read_text(encoding="utf-8").splitlines()]
    assert 40 <= len(rows) <= 60
    assert len({r["src_text"] for r in rows}) == len(rows)  # one reference per source
    pairs = {(r["src_lang"], r["trg_lang"]) for r in rows}
    assert len(pairs) >= 6
    assert {lang for pair in pairs for lang in pair} >= {"en", "de", "fr", "zh", "es"}
    assert all(r["trg_text"].strip() and r["src_text"].strip() for r in rows)
    assert len(load_mt_rows()) == len(rows)


# -- Cross-Lingual Augmentation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_targets", [1, 3])
def test_cla_targets_differ_and_references_are_dropped(num_targets):
    augmented = cross_lingual_augment(ROWS, num_targets=num_targets, seed=3)
    assert len(augmented) == num_targets * len(ROWS)
    per_source = {}
    for new in augmented:
        original = next(r for r in ROWS if r["src_text"] == new["src_text"])
        assert new["trg_lang"] in TOWER_LANGUAGES
        assert new["trg_lang"] != base(original["src_lang"])
        assert new["trg_lang"] != base(original["trg_lang"])
        assert new["trg_text"] is None  # the original reference is in another language
        assert new["cla"] is True and new["cla_original_trg_lang"] == original["trg_lang"]
        assert new["src_lang"] == original["src_lang"]
        per_source.setdefault(new["src_text"], []).append(new["trg_lang"])
    for targets in per_source.values():
        assert len(set(targets)) == len(targets) == num_targets  # drawn without replacement
    assert ROWS[0]["trg_text"] == "Hello."  # the input rows are not modified


def test_cla_is_seeded():
    first = cross_lingual_augment(load_mt_rows(), seed=11)
    again = cross_lingual_augment(load_mt_rows(), seed=11)
    other = cross_lingual_augment(load_mt_rows(), seed=12)
    assert [r["trg_lang"] for r in first] == [r["trg_lang"] for r in again]
    assert [r["trg_lang"] for r in first] != [r["trg_lang"] for r in other]


def test_cla_languages_outside_the_pool():
    augmented = cross_lingual_augment(ROWS, seed=0)
    by_source = {r["src_text"]: r["trg_lang"] for r in augmented}
    assert by_source["ありがとう。"] not in ("en", "ja")  # ja is not in the pool; en is excluded
    assert by_source["Habari."] in TOWER_LANGUAGES  # neither language is in the pool: drawn from the whole pool
    assert by_source["早上好。"] not in ("zh", "de")  # zh-CN counts as zh
    # a pool with nothing left to draw: no new row, no error
    assert cross_lingual_augment([ROWS[0]], languages=["zh", "en"]) == []


def test_rl_dataset_prompts_and_cla_rows():
    dataset = build_mt_rl_dataset(ROWS, cla=True, seed=5, cla_num_targets=2)
    assert len(dataset) == 3 * len(ROWS)
    for i, original in enumerate(ROWS):
        rows = [dataset[3 * i + k] for k in range(3)]
        assert rows[0]["cla"] is False and rows[0]["trg_text"] == original["trg_text"]
        assert [r["cla"] for r in rows[1:]] == [True, True]
        for row in rows:
            assert row["src_text"] == original["src_text"]
            assert row["prompt"] == [
                {"role": "user", "content": build_mt_prompt(row["src_text"], row["src_lang"], row["trg_lang"])}
            ]
            if row["cla"]:
                assert row["trg_text"] is None
    plain = build_mt_rl_dataset(ROWS, style="tower")
    assert len(plain) == len(ROWS) and not any(plain["cla"])
    assert plain[0]["prompt"][0]["content"].startswith("Translate the following text from Chinese into English:\n")


def test_prepare_mt_cli_writes_parquet_with_dropped_references(tmp_path):
    output = tmp_path / "rl.parquet"
    assert cli_main(["prepare-mt", str(BUNDLED_SAMPLE), str(output), "--cla", "--seed", "7"]) == 0
    frame = pd.read_parquet(output)
    sample = load_mt_rows()
    assert len(frame) == 2 * len(sample)
    augmented = frame[frame["cla"]]
    assert augmented["trg_text"].isna().all()
    assert (augmented["trg_lang"] != augmented["cla_original_trg_lang"]).all()
    assert (augmented["trg_lang"] != augmented["src_lang"]).all()
    assert frame[~frame["cla"]]["trg_text"].notna().all()
    # same seed, same file (JSONL this time)
    again = tmp_path / "rl.jsonl"
    assert cli_main(["prepare-mt", str(BUNDLED_SAMPLE), str(again), "--cla", "--seed", "7"]) == 0
    rows = [json.loads(line) for line in again.read_text(encoding="utf-8").splitlines()]
    assert [r["trg_lang"] for r in rows] == frame["trg_lang"].tolist()


def test_sft_builder_and_cli(tmp_path):
    rows = [
        {**ROWS[0], "response": "  Analysis.\n```\nHello.\n```\n"},
        {**ROWS[1], "response": ""},  # dropped
        {**ROWS[2], "response": "Analyse.\n```\nBonne nuit.\n```"},
    ]
    dataset = build_mt_sft_dataset(rows)
    assert len(dataset) == 2
    assert dataset[0]["messages"] == [
        {"role": "user", "content": build_mt_prompt("你好。", "zh", "en")},
        {"role": "assistant", "content": "Analysis.\n```\nHello.\n```"},
    ]
    source = tmp_path / "cot.jsonl"
    source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    output = tmp_path / "sft.jsonl"
    assert cli_main(["prepare-mt", str(source), str(output), "--sft"]) == 0
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [w["messages"][1]["content"] for w in written] == ["Analysis.\n```\nHello.\n```", "Analyse.\n```\nBonne nuit.\n```"]
    with pytest.raises(ValueError, match="response"):
        build_mt_sft_dataset(ROWS)


# -- eval-mt -------------------------------------------------------------------------------------------------------

EVAL_ROWS = [
    {"src_text": "The weather is very nice today.", "src_lang": "en", "trg_lang": "zh", "trg_text": "今天天气很好。"},
    {"src_text": "Practice makes perfect.", "src_lang": "en", "trg_lang": "zh", "trg_text": "熟能生巧。"},
    {"src_text": "Where is the nearest subway station?", "src_lang": "en", "trg_lang": "zh",
     "trg_text": "最近的地铁站在哪里？"},
    {"src_text": "The book is on the kitchen table.", "src_lang": "en", "trg_lang": "de",
     "trg_text": "Das Buch liegt auf dem Küchentisch."},
    {"src_text": "It is raining again today.", "src_lang": "en", "trg_lang": "de", "trg_text": "Heute regnet es wieder."},
    {"src_text": "Das Essen war sehr lecker.", "src_lang": "de", "trg_lang": "en", "trg_text": "The food was really tasty."},
    {"src_text": "Der Hund schläft unter dem Tisch.", "src_lang": "de", "trg_lang": "en",
     "trg_text": "The dog sleeps under the table."},
    {"src_text": "Ich habe heute keine Zeit.", "src_lang": "de", "trg_lang": "en", "trg_text": None},  # no reference
]


@pytest.fixture(scope="module")
def mt_policy(tmp_path_factory) -> str:
    """The recipe's tiny demo policy (a short SFT cold start on the bundled sample): it writes code blocks."""
    from trl_grrm.embedded import prepare_tiny_policy

    return prepare_tiny_policy(str(tmp_path_factory.mktemp("policy_cache")), warmup_steps=200)


@pytest.fixture()
def eval_file(tmp_path) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in EVAL_ROWS), encoding="utf-8")
    return path


def _check_against_sacrebleu(results):
    from sacrebleu.metrics import BLEU, CHRF

    by_pair = {}
    for item in results["items"]:
        by_pair.setdefault(f"{item['src_lang']}-{item['trg_lang']}", []).append(item)
    assert set(by_pair) == set(results["pairs"]) == {"en-zh", "en-de", "de-en"}
    for pair, items in by_pair.items():
        scored = [i for i in items if i["reference"] is not None]
        hyps = [i["hypothesis"] for i in scored]
        refs = [[i["reference"] for i in scored]]
        tokenize = "zh" if pair.endswith("-zh") else "13a"
        bleu = BLEU(tokenize=tokenize)
        chrf = CHRF(word_order=2)
        entry = results["pairs"][pair]
        assert entry["n"] == len(items) and entry["n_with_reference"] == len(scored)
        assert entry["bleu"] == pytest.approx(bleu.corpus_score(hyps, refs).score, abs=1e-9)
        assert entry["chrf++"] == pytest.approx(chrf.corpus_score(hyps, refs).score, abs=1e-9)
        assert results["signatures"]["BLEU"][pair] == bleu.get_signature().format()
        assert results["signatures"]["chrF++"][pair] == chrf.get_signature().format()
        assert entry["extraction_failed"] == sum(i["extraction_failed"] for i in items)
    assert "tok:zh" in results["signatures"]["BLEU"]["en-zh"]
    assert "tok:13a" in results["signatures"]["BLEU"]["en-de"]
    assert "nw:2" in results["signatures"]["chrF++"]["en-de"]  # chrF++


@pytest.mark.slow
def test_eval_mt_transformers_matches_sacrebleu_and_judges_against_reference(mt_policy, eval_file, tmp_path):
    from trl_grrm.testing.judge_server import JudgeServer, chrf_scorer

    output = tmp_path / "results.json"
    references = {r["src_text"]: r["trg_text"] for r in EVAL_ROWS if r["trg_text"]}
    with JudgeServer(scorer=chrf_scorer(references)) as server:
        code = cli_main([
            "eval-mt", "--model", mt_policy, "--data", str(eval_file), "--engine", "transformers",
            "--max-new-tokens", "96", "--output", str(output),
            "--judge-model", "judge", "--judge-base-url", server.base_url, "--judge-mode", "reference",
        ])
        requests = len(server.requests)
    assert code == 0
    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["settings"]["engine"] == "transformers"
    assert results["settings"]["extractor"] == "codeblock"
    items = results["items"]
    assert len(items) == len(EVAL_ROWS)
    assert all(len(i["responses"]) == 1 and len(i["hypotheses"]) == 1 for i in items)
    # the cold-started policy writes its translation in a code block, which the extractor pulls out
    extracted = [i for i in items if not i["extraction_failed"]]
    assert len(extracted) >= len(items) // 2
    for item in extracted:
        assert item["hypothesis"] in item["responses"][0] and "```" not in item["hypothesis"]
    _check_against_sacrebleu(results)
    assert max(p["chrf++"] for p in results["pairs"].values()) > 10  # not an empty or random output

    assert results["comet"]["status"] == "skipped"
    if importlib.util.find_spec("comet") is None:
        assert "unbabel-comet" in results["comet"]["reason"]

    # judge in reference mode: hypothesis vs reference in one group, scored by the stand-in's chrF rule
    from sacrebleu.metrics import CHRF

    judge = results["judge"]
    assert judge["mode"] == "reference"
    with_reference = [i for i in items if i["reference"] is not None]
    assert all(i["judge"] is not None for i in with_reference)
    assert next(i for i in items if i["reference"] is None)["judge"] is None
    asked = [i for i in with_reference if i["judge"].get("note") is None]
    assert len(asked) >= 2  # some references were changed from the bundled ones the policy learnt
    assert judge["judged_groups"] == len(asked) and requests == len(asked)
    for item in asked:
        expected = round(CHRF().sentence_score(item["hypothesis"], [item["reference"]]).score / 10)
        assert item["judge"]["hypothesis"] == expected
        assert item["judge"]["reference"] == 10
        assert item["judge"]["outcome"] == ("win" if expected > 10 else "tie" if expected == 10 else "loss")
    audit = output.with_suffix(".judge_audit.jsonl")
    assert len(audit.read_text(encoding="utf-8").splitlines()) == len(asked)


@pytest.mark.slow
def test_eval_mt_samples_mode_and_vllm_engine(mt_policy, eval_file, tmp_path):
    pytest.importorskip("vllm")
    from trl_grrm.evaluation.mt import main as eval_main
    from trl_grrm.testing.judge_server import JudgeServer

    output = tmp_path / "results.json"
    with JudgeServer() as server:  # length-based scores: every distinct sample gets a judge score
        code = eval_main([
            "--model", mt_policy, "--data", str(eval_file), "--engine", "vllm", "--enforce-eager",
            "--max-model-len", "512", "--dtype", "float32", "--max-new-tokens", "96",
            "--num-samples", "3", "--temperature", "1.0", "--seed", "1", "--no-comet", "--output", str(output),
            "--judge-model", "judge", "--judge-base-url", server.base_url, "--judge-mode", "samples",
        ])
    assert code == 0
    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["settings"]["engine"] == "vllm" and results["settings"]["num_samples"] == 3
    assert results["comet"] == {"status": "skipped", "reason": "disabled (--no-comet)"}
    for item in results["items"]:
        assert len(item["responses"]) == len(item["hypotheses"]) == 3
        assert item["hypothesis"] == (item["hypotheses"][0] or "")
    _check_against_sacrebleu(results)
    judged = [i for i in results["items"] if i["judge"] and "note" not in i["judge"]]
    assert judged and results["judge"]["judged_groups"] == len(judged)
    for item in judged:
        for hypothesis, score in zip(item["hypotheses"], item["judge"]["scores"]):
            assert score == (0.0 if hypothesis is None else len(hypothesis) % 11)


@pytest.mark.slow
def test_eval_mt_subprocess_with_a_wrong_judge_model_exits_2_with_one_message(mt_policy, eval_file, tmp_path):
    import subprocess

    from trl_grrm.testing.judge_server import JudgeServer

    output = tmp_path / "results.json"
    with JudgeServer(stop_after_s=600) as server:  # serves "judge", not "grrm"
        run = subprocess.run(
            [str(Path(sys.executable).parent / "trl-grrm"), "eval-mt", "--model", mt_policy, "--data", str(eval_file),
             "--engine", "transformers", "--max-new-tokens", "96", "--no-comet", "--output", str(output),
             "--judge-model", "grrm", "--judge-base-url", server.base_url],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]
    [line] = [line for line in run.stderr.splitlines() if line.startswith("trl-grrm")]
    assert line.startswith("trl-grrm eval-mt: error: ") and server.base_url in line and "'grrm'" in line
    assert "serves: judge" in line and "retry" not in run.stderr.lower()
    assert not output.exists()

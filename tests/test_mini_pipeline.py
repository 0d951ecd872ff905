"""The miniature reproduction (trl_grrm.mini.pipeline): stage caching, its pieces, the shipped models, and the
reduced run CI makes, which must show learning (a regression test of learning, not of timing)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import sys
from pathlib import Path

import pytest
from conftest import process_name, sigterm_once_running

from trl_grrm.mini import pipeline
from trl_grrm.mini.assets import ASSETS_DIR, load_manifest, materialize_assets
from trl_grrm.mini.pipeline import PRESETS, MiniReproConfig, oracle_reward, run_pipeline, sample_sources
from trl_grrm.mini.task import perturb, translate


def test_oracle_reward_scores_extracted_translations():
    import random

    source = "ri bero mab tapa ka kiro nalu"
    two_errors = perturb(translate(source), 2, random.Random(0))
    completions = [[{"role": "assistant", "content": text}] for text in (translate(source), two_errors, "   ")]
    assert oracle_reward(completions, [source] * 3) == [1.0, 0.6, 0.0]


def test_sample_sources_are_distinct_reproducible_and_exclude():
    held_out = sample_sources(50, seed=7)
    train = sample_sources(200, seed=8, exclude=held_out)
    assert len(set(train)) == 200 and not set(train) & set(held_out)
    assert sample_sources(50, seed=7) == held_out


def test_presets_and_validation():
    ci = MiniReproConfig.preset("ci", seed=3)
    assert ci.seed == 3 and ci.grpo_steps < MiniReproConfig().grpo_steps
    with pytest.raises(ValueError, match="unknown preset"):
        MiniReproConfig.preset("huge")
    with pytest.raises(ValueError, match="judge_backend"):
        MiniReproConfig(judge_backend="openai")
    with pytest.raises(ValueError, match="judge_reading_drills"):
        MiniReproConfig(judge_reading_drills=-1)
    with pytest.raises(ValueError, match="policy_sft_agreement_noise"):
        MiniReproConfig(policy_sft_agreement_noise=1.5)
    assert MiniReproConfig(grpo_kwargs='{"beta": 0.04}').grpo_kwargs == {"beta": 0.04}  # JSON from the command line
    weaker = MiniReproConfig.preset("weaker_start")
    assert (weaker.policy_sft_steps, weaker.grpo_steps, weaker.language_check) == (40, 200, "filter")


def test_reproduce_mini_options_override_the_preset(tmp_path):
    """The preset gives the defaults; an option in the YAML file or on the command line wins over it, even one that
    repeats the plain default (it used to be dropped: ``--preset ci --grpo_steps 100`` ran 20 steps)."""
    from trl_grrm.scripts.reproduce_mini import parse

    _, config = parse(["--preset", "ci", "--grpo_steps", "100"])
    assert config.grpo_steps == 100 and config.judge_train_groups == PRESETS["ci"]["judge_train_groups"]
    _, config = parse(["--preset", "weaker_start", "--language_check", "whole"])
    assert (config.language_check, config.policy_sft_steps) == ("whole", 40)
    settings = tmp_path / "settings.yaml"
    settings.write_text("preset: weaker_start\ngrpo_steps: 7\n")
    args, config = parse(["--config", str(settings)])
    assert (args.preset, config.grpo_steps, config.language_check) == ("weaker_start", 7, "filter")
    _, config = parse(["--config", str(settings), "--grpo_steps", "9"])
    assert config.grpo_steps == 9
    _, config = parse([])
    assert config == MiniReproConfig()
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        parse(["--preset", "huge"])


def test_grpo_kwargs_reach_the_gspo_config_and_its_cache_key(tmp_path, monkeypatch):
    import trl_grrm.trainers as trainers

    seen = {}

    class Stop(Exception):
        pass

    def config_spy(**kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(trainers, "GSPOConfig", config_spy)
    config = MiniReproConfig(output_dir=str(tmp_path), grpo_kwargs={"beta": 0.04, "sft_coef": 0.0})
    inputs = {"policy_sft": {"model": str(tmp_path)}, "heldout_sources": sample_sources(3, 0)}
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: None)
    with pytest.raises(Stop):
        pipeline.run_grpo(config, tmp_path, inputs, "oracle")
    assert seen["beta"] == 0.04 and seen["sft_coef"] == 0.0 and seen["max_steps"] == config.grpo_steps
    plain = MiniReproConfig(output_dir=str(tmp_path))
    assert pipeline._stage_key(config, "grpo_oracle") != pipeline._stage_key(plain, "grpo_oracle")
    assert pipeline._stage_key(config, "judge_eval") == pipeline._stage_key(plain, "judge_eval")


def test_grpo_judge_orders_and_coverage_reach_the_gqm_reward_and_only_its_cache_key(tmp_path, monkeypatch):
    import trl_grrm.trainers as trainers

    class Stop(Exception):
        pass

    def config_stop(**kwargs):
        raise Stop

    asked = {}
    monkeypatch.setattr(trainers, "GSPOConfig", config_stop)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "judge_reward", lambda judge, style, *args, **options: asked.update({style: options}))
    config = MiniReproConfig(output_dir=str(tmp_path), grpo_judge_orders=2, grpo_subgroup_coverage=4)
    inputs = {"policy_sft": {"model": str(tmp_path)}, "heldout_sources": sample_sources(3, 0),
              "judge_rlvr": {"model": "gqm-judge"}, "sqm_sft": {"model": "sqm-judge"}}  # fmt: skip
    for reward in ("gqm", "sqm"):
        with pytest.raises(Stop):
            pipeline.run_grpo(config, tmp_path, inputs, reward)
    assert asked == {"gqm": {"candidate_orders": 2, "subgroup_coverage": 4}, "sqm": {}}
    plain = MiniReproConfig(output_dir=str(tmp_path))
    for changed in (config, MiniReproConfig(output_dir=str(tmp_path), grpo_subgroup_coverage=3)):
        assert pipeline._stage_key(changed, "grpo_gqm") != pipeline._stage_key(plain, "grpo_gqm")
        for stage in ("grpo_sqm", "grpo_oracle", "judge_eval"):
            assert pipeline._stage_key(changed, stage) == pipeline._stage_key(plain, stage)
    with pytest.raises(ValueError, match="grpo_judge_orders"):
        MiniReproConfig(grpo_judge_orders=0)
    with pytest.raises(ValueError, match="grpo_subgroup_coverage"):
        MiniReproConfig(grpo_subgroup_coverage=1)


def test_judge_rewards_check_the_language_before_asking_the_judge():
    from trl_grrm.mini.task import berun_text

    checked = pipeline.judge_reward("judge", "sqm", "vllm", 4)
    assert checked._extract is berun_text and checked.config.invalid_completion_reward == 0.0
    assert checked._extract("talu velomi qq") is None
    assert pipeline.judge_reward("judge", "gqm", "vllm", 4, language_check="off")._extract("talu qq") == "talu qq"
    assert pipeline.judge_reward("judge", "gqm", "vllm", 4, candidate_orders=2)._judge.candidate_orders == 2
    assert len(pipeline.judge_reward("judge", "gqm", "vllm", 16, subgroup_coverage=4)._judge.schedule(16)) == 16
    lenient = pipeline.judge_reward("judge", "gqm", "vllm", 4, language_check="filter")
    assert lenient._extract("talu qq velomi") == "talu velomi" and lenient._extract("qq") is None
    assert lenient._extract("zeli\nzeli gara") == "zeli zeli gara"
    one_line = pipeline.judge_reward("judge", "gqm", "vllm", 4, language_check="filter_line")
    assert one_line._extract("talu qq velomi") == "talu velomi" and one_line._extract("zeli\nzeli gara") is None
    for check in ("filter", "filter_line", "off"):
        config = MiniReproConfig(language_check=check)
        for stage in ("grpo_gqm", "grpo_sqm"):
            assert pipeline._stage_key(config, stage) != pipeline._stage_key(MiniReproConfig(), stage)
        assert pipeline._stage_key(config, "grpo_oracle") == pipeline._stage_key(MiniReproConfig(), "grpo_oracle")


@pytest.mark.parametrize(("given", "meant"), [(True, "whole"), (False, "off"), ("false", "off"), ("filter", "filter")])
def test_language_check_takes_the_old_flag_values(given, meant):
    assert MiniReproConfig(language_check=given).language_check == meant


def test_an_unknown_language_check_is_refused_before_any_stage_runs():
    with pytest.raises(ValueError, match="language_check must be one of"):
        MiniReproConfig(language_check="strict")


def test_policy_candidates_keep_only_berun_samples_and_skip_empty_completions(tmp_path, monkeypatch):
    """An empty completion extracts to None (CI's tiny policy wrote one on a CPU unlike ours): it is dropped with the
    garbage, not passed to the language check as text."""
    from trl_grrm.mini.models import build_mini_model

    policy = str(build_mini_model(tmp_path / "policy", size="xs"))
    sampled = [["talu velomi", None, "talu qq", "talu"], [None, None]]
    monkeypatch.setattr(pipeline, "generate_translations", lambda *args, **kwargs: sampled)
    candidates = pipeline._policy_candidates(policy, ["ka mab", "ka soru"], MiniReproConfig(), seed=0)
    assert candidates == [["talu velomi", "talu"], []]


def test_reading_drills_train_the_gqm_judge_before_its_analyses(tmp_path, monkeypatch):
    from trl_grrm.mini.judge_data import build_ranking_dataset
    from trl_grrm.mini.models import build_mini_model

    init = str(build_mini_model(tmp_path / "init", size="xs"))
    build_ranking_dataset(12, seed=0).save_to_disk(tmp_path / "train")
    inputs = {"policy_sft": {"model": init}, "judge_data": {"train": str(tmp_path / "train")}}
    config = MiniReproConfig(output_dir=str(tmp_path), judge_init="policy", judge_reading_drills=20, judge_batch_size=4)
    calls = []
    real_sft = pipeline._sft_judge

    def recording_sft(config, stage_dir, init, conversations, batch_size, epochs=None):
        calls.append((init, conversations, epochs))
        return real_sft(config, stage_dir, init, conversations, batch_size, epochs)

    monkeypatch.setattr(pipeline, "_sft_judge", recording_sft)
    output = pipeline.run_judge_sft(config, tmp_path / "judge_sft", inputs)
    (reading_init, drills, reading_epochs), (judge_init, analyses, _) = calls
    assert reading_init == init and len(drills) == 20 and reading_epochs == 1  # two passes over 12 groups
    prompts = [drill["messages"][0]["content"] for drill in drills]
    assert len(set(prompts)) == 12 and prompts[12:] != prompts[:8]  # every group, the second pass in a new order
    assert drills[0]["messages"][1]["content"].startswith(("A: ", "B: ", "C: ", "D: "))
    # The judge starts from the model the drills trained, and learns the full GRRM answers on every group.
    assert judge_init == str(tmp_path / "judge_sft" / "reading" / "model") and Path(judge_init, "config.json").exists()
    assert len(analyses) == 12 and "### Final Ranking:" in analyses[0]["messages"][1]["content"]
    assert output["model"] == str(tmp_path / "judge_sft" / "model")

    plain = MiniReproConfig(output_dir=str(tmp_path), judge_init="policy", judge_reading_drills=0, judge_batch_size=4)
    assert pipeline._stage_key(config, "judge_rlvr") != pipeline._stage_key(plain, "judge_rlvr")
    assert pipeline._stage_key(config, "sqm_sft") == pipeline._stage_key(plain, "sqm_sft")


@pytest.mark.parametrize("stage", ["judge_sft", "sqm_sft"])
def test_judges_start_from_scratch_with_the_chosen_schedule_and_size(tmp_path, monkeypatch, stage):
    import trl

    from trl_grrm.mini.judge_data import build_ranking_dataset
    from trl_grrm.mini.models import MODEL_SIZES, build_mini_model

    class Stop(Exception):
        pass

    seen = {}

    def trainer_spy(model, args, **kwargs):
        seen.update(model=model, scheduler=args.lr_scheduler_type)
        raise Stop

    monkeypatch.setattr(trl, "SFTTrainer", trainer_spy)
    build_ranking_dataset(4, seed=0).save_to_disk(tmp_path / "train")
    build_mini_model(tmp_path / "policy", size="xs")
    inputs = {"policy_sft": {"model": str(tmp_path / "policy")}, "judge_data": {"train": str(tmp_path / "train")}}
    config = MiniReproConfig(output_dir=str(tmp_path), model_size="xs", judge_init="scratch",
                             judge_lr_scheduler="constant_with_warmup")  # fmt: skip
    with pytest.raises(Stop):
        getattr(pipeline, f"run_{stage}")(config, tmp_path / stage, inputs)
    assert seen["model"] == str(tmp_path / stage / "init") and Path(seen["model"], "config.json").exists()
    assert seen["scheduler"] == "constant_with_warmup"
    plain = MiniReproConfig(output_dir=str(tmp_path), model_size="xs", judge_init="policy", judge_lr_scheduler="cosine")
    with pytest.raises(Stop):
        getattr(pipeline, f"run_{stage}")(plain, tmp_path / f"{stage}_plain", inputs)
    assert seen["model"] == str(tmp_path / "policy") and seen["scheduler"] == "cosine"
    assert pipeline._stage_key(config, stage) != pipeline._stage_key(plain, stage)
    assert pipeline._stage_key(config, "judge_data") == pipeline._stage_key(plain, "judge_data")
    with pytest.raises(ValueError, match="judge_init"):
        MiniReproConfig(judge_init="sqm")

    larger = dataclasses.replace(config, judge_model_size="s")
    with pytest.raises(Stop):
        getattr(pipeline, f"run_{stage}")(larger, tmp_path / f"{stage}_larger", inputs)

    def shape(model_dir):
        saved = json.loads(Path(model_dir, "config.json").read_text())
        sizes = {key: saved[key] for key in ("hidden_size", "intermediate_size")}
        return {"num_layers": saved["num_hidden_layers"], **sizes}

    assert shape(seen["model"]) == MODEL_SIZES["s"] and shape(tmp_path / "policy") == MODEL_SIZES["xs"]
    assert pipeline._stage_key(larger, stage) != pipeline._stage_key(config, stage)
    assert pipeline._stage_key(larger, "policy_sft") == pipeline._stage_key(config, "policy_sft")
    for bad in (dict(judge_model_size="huge"), dict(judge_model_size="s", judge_init="policy")):
        with pytest.raises(ValueError, match="judge_model_size"):
            MiniReproConfig(**bad)


@pytest.mark.parametrize("stage", ["judge_sft", "sqm_sft"])
def test_a_blind_teacher_writes_both_judges_sft_answers_and_reruns_only_judge_stages(tmp_path, monkeypatch, stage):
    from datasets import load_from_disk

    from trl_grrm.formats.gqm import parse_gqm_output
    from trl_grrm.formats.sqm import parse_sqm_output
    from trl_grrm.mini.judge_data import Teacher
    from trl_grrm.mini.task import errors_to_score

    answers = []

    def recording_sft(config, stage_dir, init, conversations, batch_size, epochs=None):
        answers.append([row["messages"][1]["content"] for row in conversations])
        return str(stage_dir / "model")

    monkeypatch.setattr(pipeline, "_sft_judge", recording_sft)
    settings = dict(judge_init="policy", judge_reading_drills=0)
    blind = MiniReproConfig(output_dir=str(tmp_path), teacher_overlook=1.0, **settings)
    exact = MiniReproConfig(output_dir=str(tmp_path), **settings)
    sources = sample_sources(40, seed=0)
    for name, config in (("blind", blind), ("exact", exact)):
        # The judge_data stage's groups (perturbed references only: no policy samples), then the judge's SFT stage.
        pipeline._groups_dataset(sources, [[]] * len(sources), (2, 3, 4), config, 0).save_to_disk(tmp_path / name)
        inputs = {"policy_sft": {"model": "unused"}, "judge_data": {"train": str(tmp_path / name)}}
        getattr(pipeline, f"run_{stage}")(config, tmp_path / stage / name, inputs)
    ranking = load_from_disk(tmp_path / "blind")
    blind_answers, exact_answers = answers
    teacher = Teacher(overlook=1.0, blind_spot="missing")
    taught = [[errors_to_score(teacher.errors(text, translate(source))) for text in texts]
              for source, texts in zip(ranking["src_text"], ranking["mt_texts"])]  # fmt: skip
    if stage == "judge_sft":
        judged = [parse_gqm_output(answer, "ABCD"[: len(t)]).scores for answer, t in zip(blind_answers, taught)]
        assert [[scores[cid] for cid in "ABCD"[: len(scores)]] for scores in judged] == taught
    else:
        assert [parse_sqm_output(answer) for answer in blind_answers] == [s for group in taught for s in group]
    assert taught != ranking["scores"]  # the oracle's scores, which RLVR and evaluation read, stay in the data
    assert not any(" missing " in answer for answer in blind_answers)
    assert any(" missing " in answer for answer in exact_answers)
    for unaffected in ("policy_sft", "grpo_oracle"):
        assert pipeline._stage_key(blind, unaffected) == pipeline._stage_key(exact, unaffected)
    for affected in ("judge_data", "judge_sft", "sqm_sft", "judge_rlvr", "grpo_gqm"):
        assert pipeline._stage_key(blind, affected) != pipeline._stage_key(exact, affected)
    with pytest.raises(ValueError, match="blind spot"):
        MiniReproConfig(teacher_overlook=0.5, teacher_blind_spot="order")


def test_stages_are_cached_and_rerun_only_from_a_changed_setting(tmp_path, monkeypatch):
    calls: list[str] = []

    def recorder(stage):
        def run(config, stage_dir, inputs):
            calls.append(stage)
            (stage_dir / "marker").write_text(stage)
            return {"stage": stage, "upstream": sorted(k for k in inputs if k in pipeline.STAGES)}

        return run

    monkeypatch.setattr(pipeline, "_RUNNERS", {stage: recorder(stage) for stage in pipeline.STAGES[:-1]})
    config = MiniReproConfig(output_dir=str(tmp_path), workers=1)  # the recorders live in this process
    outputs = run_pipeline(config, stages=["judge_eval"], progress=False)
    assert calls == list(pipeline.STAGES[: pipeline.STAGES.index("judge_eval") + 1])
    assert outputs["judge_eval"]["upstream"] == ["judge_data", "judge_rlvr", "judge_sft", "policy_sft", "sqm_sft"]
    calls.clear()
    run_pipeline(config, stages=["judge_eval"], progress=False)
    assert calls == []  # everything cached
    calls.clear()
    changed = dataclasses.replace(config, rlvr_steps=config.rlvr_steps + 1)
    run_pipeline(changed, stages=["judge_eval"], progress=False)
    assert calls == ["judge_rlvr", "judge_eval"]  # the SQM judge does not read the RLVR judge
    calls.clear()
    outputs = run_pipeline(changed, stages=["grpo_oracle"], progress=False)
    assert calls == ["grpo_oracle"] and outputs["grpo_oracle"]["upstream"] == ["policy_sft"]
    calls.clear()
    run_pipeline(dataclasses.replace(config, judge_train_groups=7), stages=["grpo_oracle"],
                 progress=False)
    assert calls == []  # judge data is not the oracle run's business
    run_pipeline(dataclasses.replace(config, policy_sft_steps=7), stages=["grpo_oracle"], progress=False)
    assert calls == ["policy_sft", "grpo_oracle"]
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(config, stages=["judge_sft", "nonsense"], progress=False)


@pytest.mark.slow
def test_stages_run_side_by_side_in_worker_processes(tmp_path):
    """workers=2: after the policy, judge data and the oracle run go to two spawned processes; the parent reads
    their cached outputs and times. A stage that fails in its worker raises in the parent, naming the stage."""
    config = MiniReproConfig(output_dir=str(tmp_path), workers=2, model_size="xs", policy_sft_steps=2,
                             policy_sft_batch_size=4, judge_train_groups=4, heldout_groups=2, heldout_sources=4,
                             grpo_steps=1, grpo_prompts_per_step=2, eval_every=1)  # fmt: skip
    outputs = run_pipeline(config, stages=["judge_data", "grpo_oracle"], progress=False)
    assert set(outputs["stage_seconds"]) == {"policy_sft", "judge_data", "grpo_oracle"}
    assert all(seconds > 0 for seconds in outputs["stage_seconds"].values())
    ends = {stage: (tmp_path / stage / "stage.json").stat().st_mtime for stage in ("judge_data", "grpo_oracle")}
    starts = {stage: end - outputs["stage_seconds"][stage] for stage, end in ends.items()}
    assert starts["judge_data"] < ends["grpo_oracle"] and starts["grpo_oracle"] < ends["judge_data"]  # they overlapped
    assert outputs["grpo_oracle"]["curve"][0]["step"] == 0 and Path(outputs["judge_data"]["test"]).exists()
    again = run_pipeline(config, stages=["judge_data", "grpo_oracle"], progress=False)
    assert set(again["stage_seconds"].values()) == {0.0}  # all cached

    broken = dataclasses.replace(config, output_dir=str(tmp_path / "broken"), model_size="huge")
    with pytest.raises(RuntimeError, match=r"policy_sft \(exit code 1: ValueError: unknown model size 'huge'"):
        run_pipeline(broken, stages=["grpo_oracle"], progress=False)  # the worker's error, named in the parent
    assert "Traceback" in (tmp_path / "broken" / "policy_sft" / "worker_error.txt").read_text()
    assert not (tmp_path / "broken" / "grpo_oracle").exists()  # nothing launched after the failure


def test_shipped_models_match_their_manifest_and_load_in_float32(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    manifest = load_manifest()
    assert {name.split("/")[0] for name in manifest["files"]} == {"policy", "judge", "blind_teacher_judge"}
    paths = materialize_assets(tmp_path)
    for path in paths.values():
        model = AutoModelForCausalLM.from_pretrained(path)
        assert next(model.parameters()).dtype == torch.float32
    assert materialize_assets(tmp_path) == paths  # cached

    tampered = tmp_path / "assets"
    shutil.copytree(ASSETS_DIR, tampered)
    weights = next(p for p in (tampered / "judge").iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="checksum"):
        load_manifest(tampered)


def test_exporting_some_models_keeps_the_others_shipped(tmp_path):
    from trl_grrm.mini.assets import export_assets
    from trl_grrm.mini.models import build_mini_model

    run = tmp_path / "run"
    for stage in ("policy_sft", "judge_sft", "judge_rlvr"):
        build_mini_model(run / stage / "model", size="xs", seed=len(stage))
    for stage, output in (("policy_sft", {"heldout": {"oracle_score": 4.0}}),
                          ("judge_eval", {"gqm_sft": {"accuracy": 0.6}, "gqm_rlvr": {"accuracy": 0.7}})):  # fmt: skip
        (run / stage).mkdir(exist_ok=True)
        (run / stage / "stage.json").write_text(json.dumps({"key": "k", "output": output}))
    assets = tmp_path / "assets"
    export_assets(run, assets)
    first = load_manifest(assets)
    assert {name.split("/")[0] for name in first["files"]} == {"policy", "judge"}
    export_assets(run, assets, ["blind_teacher_judge"])
    both = load_manifest(assets)
    assert {k: v for k, v in both["files"].items() if not k.startswith("blind_teacher_judge/")} == first["files"]
    assert both["blind_teacher_judge_heldout"] == {"accuracy": 0.6} and both["judge_heldout"] == {"accuracy": 0.7}
    assert set(materialize_assets(tmp_path / "cache", assets)) == {"policy", "judge", "blind_teacher_judge"}
    with pytest.raises(ValueError, match="unknown shipped model"):
        export_assets(run, assets, ["critic"])


@pytest.mark.slow
def test_judge_rlvr_teaches_the_judge_what_its_teacher_overlooked(tmp_path, request):
    """The pipeline's RLVR stage raises the held-out ranking accuracy of the SFT judge it starts from on the pairs
    its teacher's blind spot decides, and keeps its accuracy on the rest.

    The start is the shipped SFT judge of a teacher with a blind spot (``blind_teacher_judge``: the GQM judge of
    ``trl-grrm reproduce-mini --teacher_overlook 0.7``, whose analyses and scores overlook 70% of omitted words): SFT
    could only learn what the teacher wrote, and RLVR's reward reads the oracle's ranking. Training and held-out
    groups are made as in the pipeline, from the shipped policy's samples and perturbed references, on sources the
    judge never saw. Over all pairs the gain at this scale is too small to assert (-0.002 to +0.063 in eight runs);
    docs/miniature.md, "What CI checks", has the figures of this test for several seeds and step counts.
    """
    import torch

    paths = materialize_assets(tmp_path / "assets")
    config = MiniReproConfig(output_dir=str(tmp_path), judge_train_groups=1000, heldout_groups=400, rlvr_steps=200)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # as run_pipeline runs its stages
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    heldout = sample_sources(config.heldout_sources, config.seed + 1_000)  # as the pipeline draws them
    seen_by_the_judge = sample_sources(30000, config.seed + 2, heldout)  # its SFT run's training sources
    inputs = {"policy_sft": {"model": str(paths["policy"])}, "heldout_sources": [*heldout, *seen_by_the_judge]}
    inputs["judge_data"] = pipeline.run_judge_data(config, tmp_path / "judge_data", inputs)
    inputs["judge_sft"] = {"model": str(paths["blind_teacher_judge"])}
    rlvr = pipeline.run_judge_rlvr(config, tmp_path / "judge_rlvr", inputs)
    before, after = (pipeline.evaluate_judge(model, "gqm", inputs["judge_data"]["test"], config.teacher_blind_spot)
                     for model in (inputs["judge_sft"]["model"], rlvr["model"]))  # fmt: skip
    assert before["parse_failure_rate"] < 0.1  # a judge that answers in format, not one RLVR merely teaches to parse
    assert before["blind_spot_pairs"] > 300
    assert after["blind_spot_accuracy"] > before["blind_spot_accuracy"] + 0.03
    assert after["accuracy"] > before["accuracy"] - 0.02


def test_sigterm_raises_system_exit_in_the_pipeline_unless_the_program_handles_it():
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(SystemExit) as stopped, pipeline._sigterm_raises_system_exit():
        signal.raise_signal(signal.SIGTERM)
    assert stopped.value.code == 143 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    received = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with pipeline._sigterm_raises_system_exit():
            signal.raise_signal(signal.SIGTERM)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_sigterm_while_a_stage_worker_starts_stops_that_worker(tmp_path, monkeypatch):
    """A SIGTERM that arrives after a worker's process exists but before the pipeline holds it stops that worker too,
    instead of leaving it running, orphaned."""
    import multiprocessing.process

    from tqdm import tqdm

    started = []
    start = multiprocessing.process.BaseProcess.start

    def start_then_sigterm(process):
        start(process)
        started.append(process)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_then_sigterm)
    try:
        with pytest.raises(SystemExit), pipeline._sigterm_raises_system_exit():
            pipeline._run_side_by_side(MiniReproConfig(output_dir=str(tmp_path)), ["policy_sft"], tqdm(disable=True))
        assert len(started) == 1 and started[0].exitcode is not None
    finally:
        for process in started:
            process.kill()


@pytest.mark.slow
def test_sigterm_stops_the_stage_workers_and_their_vllm_engines(tmp_path):
    """``kill``, ``timeout`` and job schedulers send SIGTERM to the command's process alone. Its stage workers and
    their in-process vLLM engines must stop with it (they used to run on, orphaned) and the finished stages stay
    cached."""
    psutil = pytest.importorskip("psutil")
    output_dir = tmp_path / "mini"
    command = [sys.executable, "-m", "trl_grrm.cli", "reproduce-mini", "--preset", "ci", "--workers", "2",
               "--output_dir", str(output_dir)]  # fmt: skip
    # 10 s after an engine core appears: into the stage, past the engine's start
    with sigterm_once_running(command, tmp_path / "log.txt", "VLLM::EngineCore", after_s=10) as descendants:
        _, alive = psutil.wait_procs(descendants, timeout=30)
        assert not alive, f"left running after SIGTERM: {[(p.pid, process_name(p)) for p in alive]}"
        assert pipeline._is_cached(MiniReproConfig.preset("ci", output_dir=str(output_dir)), "policy_sft")


def test_results_average_the_last_evaluations_beside_the_final_one():
    """A late spike decides the final score but not the late mean. The curves are seed 1's GQM and oracle runs with
    150 judge RLVR steps (docs/miniature.md, "150 judge RLVR steps"): 3.47 at step 200, 3.18 twenty steps later."""

    def run(*scores: float) -> dict:
        curve = [{"step": 20 * i, "oracle_score": s} for i, s in enumerate((2.64, *scores))]
        return {"curve": curve, "zero_variance": [{"step": 1, "value": 0.125}, {"step": 2, "value": 0.0}]}

    outputs = {"grpo_gqm": run(3.03, 2.77, 3.09, 3.06, 3.09, 3.23, 3.47), "grpo_sqm": run(2.64),
               "grpo_oracle": run(3.0, 3.25, 3.2, 3.03, 3.21, 3.37), "judge_eval": {}}  # fmt: skip
    gqm, sqm, oracle = (pipeline.summarize_results(MiniReproConfig(), outputs)["grpo"][r] for r in pipeline.REWARDS)
    assert gqm["final_oracle_score"] == 3.47
    assert gqm["share_of_oracle_gain"] == pytest.approx((3.47 - 2.64) / (3.37 - 2.64))  # 1.14: met by the spike
    late, oracle_late = (3.09 + 3.23 + 3.47) / 3, (3.03 + 3.21 + 3.37) / 3
    assert gqm["late_oracle_score"] == pytest.approx(late)
    assert gqm["late_relative_gain"] == pytest.approx((late - 2.64) / 2.64)
    assert gqm["late_share_of_oracle_gain"] == pytest.approx((late - 2.64) / (oracle_late - 2.64))
    assert gqm["zero_variance_fraction"] == pytest.approx(0.0625)
    assert sqm["late_oracle_score"] == 2.64 and sqm["late_relative_gain"] == 0.0  # one evaluation after the start
    assert oracle["late_share_of_oracle_gain"] == pytest.approx(1.0)
    table = pipeline.render_markdown({**pipeline.summarize_results(MiniReproConfig(), outputs), "judges": {
        key: {"accuracy": None, "zero_variance_groups": 0.0, "parse_failure_rate": 0.0}
        for key in ("gqm_sft", "gqm_rlvr", "sqm")}})  # fmt: skip
    assert "| gqm | 3.47 | 31% | 1.14 | 3.26 (24%, 1.11) | 0.06 |" in table


@pytest.mark.slow
def test_reduced_pipeline_runs_every_stage_and_resumes(tmp_path):
    """The CI-sized run of every stage, on real trainers and in-process vLLM judges, two stages at a time in worker
    processes (as on 2 cores): the stages connect, the SFT policy learned to translate from a random start, every
    GSPO run is measured on its schedule, the report is written, and a second run finds every stage cached.

    GSPO with the oracle reward must raise the policy's held-out score. The test does not assert that RLVR beats the
    SFT judge or that GSPO with these judges raises the policy's score: at this scale the judges have not yet learned
    the answer format (measured: parse failures 1.00 for all three, so their GSPO runs see no signal;
    docs/miniature.md, "What CI checks"; judges with the shorter count analysis parse at this scale but answer
    almost the same for every group, so RLVR against SFT came out +0.13 for seed 0 and -0.27 for seed 1). Both are
    asserted from shipped models instead: RLVR in test_judge_rlvr_teaches_the_judge_what_its_teacher_overlooked,
    GSPO with a trained judge in tests/test_mt_recipes.py::test_embedded_default_accelerate_launch_learns."""
    config = MiniReproConfig.preset("ci", output_dir=str(tmp_path / "mini"), workers=2)
    results = run_pipeline(config, progress=False)
    assert results["policy_start"] > 2.0  # a random policy scores 0; 60 SFT steps reach about 5 of 10
    for key in ("gqm_sft", "gqm_rlvr", "sqm"):
        assert 0.0 <= results["judges"][key]["parse_failure_rate"] <= 1.0
    out = Path(config.output_dir)
    for reward in ("gqm", "sqm", "oracle"):
        curve = json.loads((out / f"grpo_{reward}" / "stage.json").read_text())["output"]["curve"]
        assert [p["step"] for p in curve] == list(range(0, config.grpo_steps + 1, config.eval_every))
        assert curve[0]["oracle_score"] == pytest.approx(results["policy_start"])  # same start for every reward
        assert 0.0 <= results["grpo"][reward]["zero_variance_fraction"] <= 1.0
    assert json.loads((out / "results.json").read_text())["grpo"] == results["grpo"]
    # GSPO itself learns at this scale with a perfect reward (measured: 5.04 -> 5.48 in 20 steps)
    assert results["grpo"]["oracle"]["final_oracle_score"] > results["policy_start"]
    for plot in ("judge_accuracy.png", "zero_variance.png", "policy_score.png"):
        assert (out / plot).stat().st_size > 1000
    assert "GQM after RLVR" in (out / "results.md").read_text()

    stamps = {stage: (out / stage / "stage.json").stat().st_mtime_ns for stage in pipeline.STAGES[:-1]}
    again = run_pipeline(config, progress=False)
    assert again["grpo"] == results["grpo"]
    assert {stage: (out / stage / "stage.json").stat().st_mtime_ns for stage in stamps} == stamps

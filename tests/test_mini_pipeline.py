"""The miniature reproduction (trl_grrm.mini.pipeline): stage caching, its pieces, the shipped models, and the
reduced run CI makes, which must show learning (a regression test of learning, not of timing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trl_grrm.mini import pipeline
from trl_grrm.mini.assets import ASSETS_DIR, load_manifest, materialize_assets
from trl_grrm.mini.pipeline import MiniReproConfig, oracle_reward, run_pipeline, sample_sources
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


def test_stages_are_cached_and_rerun_only_from_a_changed_setting(tmp_path, monkeypatch):
    calls: list[str] = []

    def recorder(stage):
        def run(config, stage_dir, inputs):
            calls.append(stage)
            (stage_dir / "marker").write_text(stage)
            return {"stage": stage, "upstream": sorted(k for k in inputs if k in pipeline.STAGES)}

        return run

    monkeypatch.setattr(pipeline, "_RUNNERS", {stage: recorder(stage) for stage in pipeline.STAGES[:-1]})
    config = MiniReproConfig(output_dir=str(tmp_path))
    outputs = run_pipeline(config, stages=["judge_eval"], progress=False)
    assert calls == list(pipeline.STAGES[: pipeline.STAGES.index("judge_eval") + 1])
    assert outputs["judge_eval"]["upstream"] == ["judge_data", "judge_rlvr", "judge_sft", "policy_sft", "sqm_sft"]
    calls.clear()
    run_pipeline(config, stages=["judge_eval"], progress=False)
    assert calls == []  # everything cached
    calls.clear()
    changed = MiniReproConfig(output_dir=str(tmp_path), rlvr_steps=config.rlvr_steps + 1)
    run_pipeline(changed, stages=["judge_eval"], progress=False)
    assert calls == ["judge_rlvr", "sqm_sft", "judge_eval"]
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(config, stages=["judge_sft", "nonsense"], progress=False)


def test_shipped_models_match_their_manifest_and_load_in_float32(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    manifest = load_manifest()
    assert {name.split("/")[0] for name in manifest["files"]} == {"policy", "judge"}
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


@pytest.mark.slow
def test_reduced_pipeline_learns(tmp_path):
    """The CI-sized run of every stage: RLVR improves the judge over its SFT checkpoint, and GSPO with the trained
    GQM judge (in-process vLLM) raises the policy's held-out oracle score over its SFT start."""
    config = MiniReproConfig.preset("ci", output_dir=str(tmp_path / "mini"))
    results = run_pipeline(config, progress=False)
    judges = results["judges"]
    assert judges["gqm_rlvr"]["accuracy"] is not None
    assert judges["gqm_rlvr"]["accuracy"] > (judges["gqm_sft"]["accuracy"] or 0.0), judges
    gqm = results["grpo"]["gqm"]
    assert gqm["final_oracle_score"] > results["policy_start"], results["grpo"]
    written = json.loads((Path(config.output_dir) / "results.json").read_text())
    assert written["grpo"]["gqm"] == gqm
    for plot in ("judge_accuracy.png", "zero_variance.png", "policy_score.png"):
        assert (Path(config.output_dir) / plot).stat().st_size > 1000
    assert "GQM after RLVR" in (Path(config.output_dir) / "results.md").read_text()

"""Packaging: the top-level lazy exports, a light `import trl_grrm`, and metadata that setuptools accepts silently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAZY_EXPORTS = {
    "GSPOConfig": "trl_grrm.trainers",
    "GSPOTrainer": "trl_grrm.trainers",
    "JudgeRLVRConfig": "trl_grrm.trainers",
    "JudgeRLVRTrainer": "trl_grrm.trainers",
    "RankingReward": "trl_grrm.judge_training",
    "RankingRewardConfig": "trl_grrm.judge_training",
}


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_import_trl_grrm_loads_neither_trl_nor_torch():
    heavy = ["trl", "trl.trainer", "torch", "transformers", "vllm", "trl_grrm.trainers", "trl_grrm.judge_training"]
    out = run_python(f"import sys, json, trl_grrm; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))")
    assert json.loads(out.splitlines()[-1]) == []


def test_trainers_and_ranking_reward_import_from_the_top_level():
    names = ", ".join(LAZY_EXPORTS)
    code = (
        f"import importlib, json\nfrom trl_grrm import {names}\n"
        f"print(json.dumps({{n: getattr(importlib.import_module(m), n) is globals()[n] "
        f"for n, m in {LAZY_EXPORTS!r}.items()}}))"
    )
    assert json.loads(run_python(code).splitlines()[-1]) == dict.fromkeys(LAZY_EXPORTS, True)


def test_top_level_listing_and_unknown_names():
    import trl_grrm

    assert set(LAZY_EXPORTS) <= set(trl_grrm.__all__) and set(LAZY_EXPORTS) <= set(dir(trl_grrm))
    with pytest.raises(AttributeError, match="no attribute 'GSPOTrainr'"):
        trl_grrm.GSPOTrainr  # noqa: B018
    with pytest.raises(ImportError):
        from trl_grrm import GSPOTrainr  # noqa: F401


def test_license_is_an_spdx_expression_that_setuptools_accepts_without_warning(tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))  # PEP 639 forbids both
    code = f"from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel({str(tmp_path)!r}))"
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "project.license" not in proc.stderr and "License classifiers are deprecated" not in proc.stderr
    metadata = (tmp_path / proc.stdout.splitlines()[-1] / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()

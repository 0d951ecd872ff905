"""The trained miniature models shipped in the package: the SFT policy and the RLVR-trained GRRM judge.

``trl-grrm reproduce-mini --export_assets trl_grrm/mini/assets`` writes them (bfloat16 safetensors, a few MB) with a
``MANIFEST.json`` holding each file's SHA-256 and the run's headline numbers. :func:`materialize_assets` checks the
checksums and writes float32 copies into a cache folder, which is what ``trl-grrm grpo-mt``'s embedded default
trains and serves (vLLM's and TRL's CPU paths both want float32).

Example:
    >>> paths = materialize_assets()  # doctest: +SKIP
    >>> paths["policy"], paths["judge"]  # doctest: +SKIP
    (PosixPath('~/.cache/trl_grrm/mini-assets-.../policy'), PosixPath('~/.cache/trl_grrm/mini-assets-.../judge'))
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

ASSETS_DIR = Path(__file__).parent / "assets"
"""Where the package keeps the shipped models."""
MODELS = {"policy": "policy_sft", "judge": "judge_rlvr"}
"""Shipped model -> the pipeline stage it comes from."""
MANIFEST = "MANIFEST.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_assets(run_dir: str | Path, destination: str | Path = ASSETS_DIR) -> Path:
    """Copy a reproduction's SFT policy and RLVR judge (its stages up to ``judge_eval`` done) into ``destination``
    in bfloat16, with a manifest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, destination = Path(run_dir), Path(destination)
    outputs = {name: json.loads((run_dir / name / "stage.json").read_text())["output"]
             for name in ("policy_sft", "judge_eval")}  # fmt: skip
    files: dict[str, str] = {}
    for name, stage in MODELS.items():
        source, target = run_dir / stage / "model", destination / name
        shutil.rmtree(target, ignore_errors=True)
        AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(target)
        AutoTokenizer.from_pretrained(source).save_pretrained(target)
        for path in sorted(target.iterdir()):
            files[f"{name}/{path.name}"] = _sha256(path)
    manifest = {
        "files": files,
        "source": "trl-grrm reproduce-mini (trl_grrm.mini.pipeline), stages policy_sft and judge_rlvr",
        "policy_heldout": outputs["policy_sft"]["heldout"],
        "judge_heldout": outputs["judge_eval"]["gqm_rlvr"],
    }
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return destination


def load_manifest(assets: str | Path = ASSETS_DIR) -> dict[str, Any]:
    """The shipped manifest, with every file's checksum verified; raises ``ValueError`` naming a bad file."""
    assets = Path(assets)
    if not (assets / MANIFEST).exists():
        raise FileNotFoundError(f"no {MANIFEST} in {assets}: build the models with `trl-grrm reproduce-mini "
                                f"--export_assets {assets}`")  # fmt: skip
    manifest = json.loads((assets / MANIFEST).read_text())
    for name, digest in manifest["files"].items():
        path = assets / name
        if not path.exists() or _sha256(path) != digest:
            raise ValueError(f"{path} is missing or does not match its checksum in {assets / MANIFEST}; reinstall "
                             "trl-grrm or rebuild the assets with `trl-grrm reproduce-mini --export_assets`")  # fmt: skip
    return manifest


def materialize_assets(cache_dir: str | Path | None = None, assets: str | Path = ASSETS_DIR) -> dict[str, Path]:
    """Float32 copies of the shipped policy and judge in ``cache_dir`` (default ``$TRL_GRRM_CACHE_DIR`` or
    ``~/.cache/trl_grrm``), made once per manifest; returns ``{"policy": path, "judge": path}``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = load_manifest(assets)
    digest = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir or os.environ.get("TRL_GRRM_CACHE_DIR") or Path.home() / ".cache" / "trl_grrm")
    target = root / f"mini-assets-{digest}"
    paths = {name: target / name for name in MODELS}
    if (target / "READY").exists():
        return paths
    staging = root / f".mini-assets-{digest}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for name in MODELS:
        model = AutoModelForCausalLM.from_pretrained(Path(assets) / name, dtype=torch.float32)
        model.save_pretrained(staging / name)
        AutoTokenizer.from_pretrained(Path(assets) / name).save_pretrained(staging / name)
    (staging / "READY").write_text(json.dumps(manifest["files"]))
    try:
        staging.rename(target)  # atomic: concurrent processes never see a half-written copy
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return paths

"""The trained miniature models shipped in the package: the SFT policy and the RLVR-trained GRRM judge, which
``trl-grrm grpo-mt``'s embedded default trains and serves, and the SFT judge of a teacher with a blind spot, from
which the test suite trains a judge with RLVR.

``trl-grrm reproduce-mini --export_assets trl_grrm/mini/assets`` writes them (bfloat16 safetensors, a few MB) with a
``MANIFEST.json`` holding each file's SHA-256 and the run's headline numbers (``--export_models`` picks which; the
others stay). :func:`materialize_assets` checks the checksums and writes float32 copies into a cache folder (vLLM's
and TRL's CPU paths both want float32).

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ASSETS_DIR = Path(__file__).parent / "assets"
"""Where the package keeps the shipped models."""
MODELS = {"policy": "policy_sft", "judge": "judge_rlvr", "blind_teacher_judge": "judge_sft"}
"""Shipped model -> the pipeline stage it comes from. ``policy`` and ``judge`` come from ``trl-grrm reproduce-mini``
with the defaults, ``blind_teacher_judge`` from the same run with ``--teacher_overlook 0.7`` (its judge overlooks
most omitted words; docs/miniature.md)."""
EMBEDDED_DEFAULT_MODELS = ("policy", "judge")
"""The shipped models ``trl-grrm grpo-mt``'s embedded default loads: what ``--export_assets`` refreshes by default."""
_HEADLINES = {"policy": ("policy_sft", "heldout"), "judge": ("judge_eval", "gqm_rlvr"),
              "blind_teacher_judge": ("judge_eval", "gqm_sft")}  # fmt: skip
MANIFEST = "MANIFEST.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_assets(
    run_dir: str | Path, destination: str | Path = ASSETS_DIR, models: Sequence[str] = EMBEDDED_DEFAULT_MODELS
) -> Path:
    """Copy ``models`` (names in :data:`MODELS`) of a reproduction whose stages up to ``judge_eval`` are done into
    ``destination`` in bfloat16, and record their checksums and held-out numbers in its manifest. Models already
    there and not named keep their files and entries."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    unknown = [name for name in models if name not in MODELS]
    if unknown:
        raise ValueError(f"unknown shipped model(s) {unknown}; choose from {list(MODELS)}")
    run_dir, destination = Path(run_dir), Path(destination)
    old = json.loads((destination / MANIFEST).read_text()) if (destination / MANIFEST).exists() else {"files": {}}
    kept = {file: digest for file, digest in old["files"].items() if file.split("/")[0] not in models}
    manifest = {**old, "files": kept, "source": "trl-grrm reproduce-mini (trl_grrm.mini.pipeline): see MODELS in "
                "trl_grrm.mini.assets"}  # fmt: skip
    for name in models:
        source, target = run_dir / MODELS[name] / "model", destination / name
        shutil.rmtree(target, ignore_errors=True)
        AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(target)
        AutoTokenizer.from_pretrained(source).save_pretrained(target)
        for path in sorted(target.iterdir()):
            manifest["files"][f"{name}/{path.name}"] = _sha256(path)
        stage, key = _HEADLINES[name]
        manifest[f"{name}_heldout"] = json.loads((run_dir / stage / "stage.json").read_text())["output"][key]
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
    """Float32 copies of the shipped models in ``cache_dir`` (default ``$TRL_GRRM_CACHE_DIR`` or
    ``~/.cache/trl_grrm``), made once per manifest; returns ``{name: path}`` for every model in the manifest."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = load_manifest(assets)
    digest = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()).hexdigest()[:12]
    root = Path(cache_dir or os.environ.get("TRL_GRRM_CACHE_DIR") or Path.home() / ".cache" / "trl_grrm")
    target = root / f"mini-assets-{digest}"
    paths = {name: target / name for name in MODELS if f"{name}/config.json" in manifest["files"]}
    if (target / "READY").exists():
        return paths
    staging = root / f".mini-assets-{digest}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    for name in paths:
        model = AutoModelForCausalLM.from_pretrained(Path(assets) / name, dtype=torch.float32)
        model.save_pretrained(staging / name)
        AutoTokenizer.from_pretrained(Path(assets) / name).save_pretrained(staging / name)
    (staging / "READY").write_text(json.dumps(manifest["files"]))
    try:
        staging.rename(target)  # atomic: concurrent processes never see a half-written copy
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return paths

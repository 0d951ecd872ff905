"""Every repository path that a config, a recipe, a library docstring, the README or the docs tell a user to open or
launch exists (e.g. `accelerate_configs/zero3.yaml`, not TRL's `trl/accelerate_configs/zero3.yaml`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Only what looks like a path inside this repository: one of its top-level folders, then a file or folder name.
# The look-behind skips longer paths that merely contain such a folder (trl/accelerate_configs/..., /tmp/docs/...).
REPO_PATH = re.compile(
    r"(?<![\w/.\-~$])((?:accelerate_configs|recipes|docs|scripts|benchmarks|trl_grrm|tests)/[\w.\-/]*[\w/])"
)


def _documents() -> list[Path]:
    patterns = ["README.md", "docs/*.md", "recipes/*.py", "recipes/configs/*", "accelerate_configs/*",
                "trl_grrm/**/*.py", "scripts/*", "benchmarks/**/*.py"]
    return sorted({path for pattern in patterns for path in REPO.glob(pattern) if path.is_file()})


def repo_paths(text: str) -> list[str]:
    """The repository-relative paths named in a text, without trailing sentence punctuation.

    >>> repo_paths("launch with accelerate_configs/zero3.yaml. Not trl/accelerate_configs/zero3.yaml or ~/docs/x.md")
    ['accelerate_configs/zero3.yaml']
    """
    return [match.group(1).rstrip(".") for match in REPO_PATH.finditer(text)]


def test_the_path_pattern_finds_what_a_user_would_follow():
    text = "see docs/reproduction.md, recipes/configs/sft_mt.yaml and (accelerate_configs/zero2.yaml)."
    assert repo_paths(text) == ["docs/reproduction.md", "recipes/configs/sft_mt.yaml", "accelerate_configs/zero2.yaml"]
    assert repo_paths("--config_file trl/accelerate_configs/zero3.yaml, $HOME/scripts/x.sh") == []


def test_every_named_repo_path_exists():
    missing = []
    for document in _documents():
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), start=1):
            for path in repo_paths(line):
                if not (REPO / path).exists():
                    missing.append(f"{document.relative_to(REPO)}:{number}: {path}")
    assert missing == [], "paths that do not exist:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_launch_commands_use_this_repos_accelerate_configs(path):
    text = path.read_text(encoding="utf-8")
    for match in re.finditer(r"--config_file\s+(\S+)", text):
        assert (REPO / match.group(1)).is_file(), f"{path.name}: --config_file {match.group(1)} does not exist"

"""The documentation site: its code examples run, every public config option has a generated table, and
`mkdocs build --strict` passes (broken links, missing pages and stale API names fail it)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
from pathlib import Path

import pytest

from conftest import REPO, load_module, run_command

DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

# A python block runs unless the line before its fence is `<!-- docs-test: skip REASON -->`.
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\s+(?P<reason>.+?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


options_hook = load_module(DOCS / "hooks" / "options.py", "docs_options_hook")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` for each fenced ``python`` block of a page.

    >>> python_blocks("<!-- docs-test: skip needs a GPU -->\\n```python\\nx = 1\\n```\\n```python\\ny = 2\\n```\\n")
    [(2, 'x = 1', 'needs a GPU'), (5, 'y = 2', None)]
    """
    lines = text.splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        if fence.group("lang") == "python":
            skip = SKIP.match(lines[index - 1]) if index > 0 else None
            blocks.append((index + 1, "\n".join(lines[index + 1 : end]), skip.group("reason") if skip else None))
        index = end + 1
    return blocks


SNIPPETS = [
    pytest.param(code, reason, id=f"{page.relative_to(DOCS)}:{line}")
    for page in PAGES
    for line, code, reason in python_blocks(page.read_text(encoding="utf-8"))
]


def test_the_docs_have_runnable_examples():
    runnable = [p for p in SNIPPETS if p.values[1] is None]
    assert len(runnable) >= 5, "the docs lost their runnable examples"


@pytest.mark.parametrize("code, skip_reason", SNIPPETS)
def test_docs_python_example_runs(code, skip_reason, tmp_path, monkeypatch):
    if skip_reason is not None:
        pytest.skip(skip_reason)
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    exec(compile(code, "<docs example>", "exec"), {"__name__": "__docs_example__"})


# -- option tables -------------------------------------------------------------------------------------------------

MARKERS = [(m.group("target"), bool(m.group("own"))) for page in PAGES
           for m in options_hook.MARKER.finditer(page.read_text(encoding="utf-8"))]

# Every public config: the dataclasses a user builds to configure trl-grrm, and the recipes' script arguments.
PUBLIC_CONFIGS = [
    "trl_grrm.rewards.GroupRelativeRewardConfig",
    "trl_grrm.rewards.PairwiseRewardConfig",
    "trl_grrm.trainers.GSPOConfig",
    "trl_grrm.trainers.JudgeRLVRConfig",
    "trl_grrm.judge_training.RankingRewardConfig",
    "trl_grrm.engines.EngineConfig",
    "trl_grrm.engines.JudgeConfig",
    "trl_grrm.scripts.grpo_mt.MTScriptArguments",
    "trl_grrm.scripts.sft_mt.SFTMTScriptArguments",
    "trl_grrm.scripts.sft_judge.JudgeSFTScriptArguments",
    "trl_grrm.scripts.rlvr_judge.JudgeRLVRScriptArguments",
]


def test_every_exported_config_is_in_the_list_of_public_configs():
    import trl_grrm

    exported = {name for name in trl_grrm.__all__ if name.endswith("Config")}
    listed = {target.rsplit(".", 1)[-1].rsplit(":", 1)[-1] for target in PUBLIC_CONFIGS}
    assert exported <= listed, f"configs exported by trl_grrm without a docs table: {sorted(exported - listed)}"


@pytest.mark.parametrize("target", PUBLIC_CONFIGS)
def test_every_option_of_a_public_config_is_on_a_docs_page(target):
    own = [o for t, o in MARKERS if t == target]
    assert own, f"no `<!-- options: {target} -->` table on any docs page"
    cls = options_hook.load_class(target)
    table = options_hook.render_options(target, own[0])
    parent = next((b for b in cls.__mro__[1:] if dataclasses.is_dataclass(b)), None) if own[0] else None
    inherited = {f.name for f in dataclasses.fields(parent)} if parent else set()
    declared = set(vars(cls).get("__annotations__", {}))
    expected = [f.name for f in dataclasses.fields(cls) if f.name not in inherited or f.name in declared]
    missing = [name for name in expected if f"| `{name}` |" not in table]
    assert expected and not missing


def test_gspo_table_shows_trl_defaults_next_to_the_papers():
    # Independent of the hook's own logic: the paper's clip and TRL's, as documented by TRL (epsilon=0.2).
    table = options_hook.render_options("trl_grrm.trainers.GSPOConfig", own=True)
    assert "| `epsilon` | `0.0003` | `0.2` |" in table
    assert "| `sft_coef` | `0.1` | (new) |" in table


def test_an_unknown_config_in_a_marker_fails_loudly():
    with pytest.raises(AttributeError):
        options_hook.expand("<!-- options: trl_grrm.rewards.NoSuchConfig -->")


def test_cli_reference_is_the_commands_help():
    text = options_hook.expand("<!-- cli: eval-ranking -->")
    assert text.startswith("```text\nusage: trl-grrm eval-ranking") and "--permutations" in text


# -- the site builds -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    command = [mkdocs] if mkdocs else [sys.executable, "-m", "mkdocs"]
    result = run_command([*command, "build", "--strict", "--site-dir", tmp_path / "site"], cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "rewards" / "index.html").is_file()
    reward_page = (tmp_path / "site" / "reward-functions" / "index.html").read_text(encoding="utf-8")
    assert "<code>score_scale</code>" in reward_page  # the generated option table was rendered


def test_text_after_a_generated_table_stays_outside_it():
    text = options_hook.expand("<!-- options: trl_grrm.engines.EngineConfig -->\n\nA sentence after the table.\n")
    table, after = text.split("\n\n", 1)
    assert table.splitlines()[-1].startswith("| `device` |") and after == "A sentence after the table.\n"

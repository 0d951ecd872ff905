"""MkDocs hook: option tables generated from the configs' dataclass fields.

A page line ``<!-- options: trl_grrm.rewards.GroupRelativeRewardConfig -->`` becomes a table with one row per field
(name, default, the field's ``metadata["help"]``). ``<!-- options: trl_grrm.trainers.GSPOConfig own -->`` lists only
the fields the class declares itself, with the parent class's default next to its own. A class in a script outside
the package is named by path: ``<!-- options: path/to/script.py:ScriptArguments own -->``.

The tables are rendered at build time from the code, so they cannot go stale; ``tests/test_docs.py`` imports this
module to check that every public config has a table somewhere in the docs.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!--\s*options:\s*(?P<target>\S+)(?P<own>\s+own)?\s*-->[ \t]*$", re.MULTILINE)


def load_class(target: str) -> type:
    """The class a marker names: ``package.module.Class`` or ``path/to/script.py:Class``."""
    if ":" in target:
        path, name = target.split(":", 1)
        module_name = "_docs_" + re.sub(r"\W", "_", path)
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, REPO / path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        return getattr(module, name)
    module_name, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), name)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    return f"`{value!r}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def option_rows(cls: type, own: bool = False) -> list[tuple[str, str, str | None, str]]:
    """``(name, default, parent default or None, help)`` for each field of ``cls`` (only its own ones if ``own``)."""
    fields = dataclasses.fields(cls)
    parent = next((base for base in cls.__mro__[1:] if dataclasses.is_dataclass(base)), None) if own else None
    parent_fields = {f.name: f for f in dataclasses.fields(parent)} if parent else {}
    own_names = set(vars(cls).get("__annotations__", {})) if own else None
    rows = []
    for f in fields:
        if own_names is not None and f.name not in own_names:
            continue
        parent_default = _default(parent_fields[f.name]) if f.name in parent_fields else ("(new)" if parent else None)
        rows.append((f.name, _default(f), parent_default, _cell(f.metadata.get("help", ""))))
    return rows


def render_options(target: str, own: bool = False) -> str:
    """The markdown table for one marker."""
    cls = load_class(target)
    rows = option_rows(cls, own)
    parent = next((base for base in cls.__mro__[1:] if dataclasses.is_dataclass(base)), None) if own else None
    if parent is not None:
        lines = [f"| option | default | `{parent.__name__}` default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{name}` | {default} | {parent_default} | {help_} |" for name, default, parent_default, help_ in rows]
    else:
        lines = ["| option | default | meaning |", "|---|---|---|"]
        lines += [f"| `{name}` | {default} | {help_} |" for name, default, _, help_ in rows]
    return "\n".join(lines)




CLI_MARKER = re.compile(r"^<!--\s*cli:\s*(?P<command>[\w-]+)\s*-->[ \t]*$", re.MULTILINE)


def render_cli_help(command: str) -> str:
    """``trl-grrm <command> --help``, as a text block."""
    import contextlib
    import io
    import os

    from trl_grrm.cli import main

    out = io.StringIO()
    old_columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "96"  # argparse wraps to the terminal; fix the width so the page does not depend on it
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([command, "--help"])
    finally:
        if old_columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old_columns
    if not out.getvalue().strip():
        raise ValueError(f"`trl-grrm {command} --help` printed nothing")
    return "```text\n" + out.getvalue().rstrip() + "\n```"


def expand(markdown: str) -> str:
    """``markdown`` with every options marker replaced by its table and every cli marker by the command's help."""
    markdown = MARKER.sub(lambda m: render_options(m.group("target"), bool(m.group("own"))), markdown)
    return CLI_MARKER.sub(lambda m: render_cli_help(m.group("command")), markdown)


def on_page_markdown(markdown: str, **kwargs) -> str:  # MkDocs hook
    return expand(markdown)

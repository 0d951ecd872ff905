"""Griffe extension: render this package's docstrings, written for Sphinx-style readers, as clean Markdown.

- ``Example:`` sections become examples. The docstrings follow TRL's habit of ``Example:`` (singular) before their
  doctests; Griffe's Google-style parser reads only ``Examples:`` as an examples section and renders ``Example:`` as
  prose, where doctest output such as ``row["messages"][1]`` reads as a Markdown link.
- Sphinx roles (``:class:`~trl_grrm.x.Y```, ``:func:``, ``:meth:``, ...) become inline code (``Y``): Markdown has no
  roles and would print them verbatim.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|obj|exc|const):`(?P<tilde>~?)(?P<target>[^`]+)`")


def _role_to_code(match: re.Match) -> str:
    target = match.group("target")
    return f"`{target.rsplit('.', 1)[-1] if match.group('tilde') else target}`"


class MarkdownDocstrings(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _SINGULAR.sub(r"\g<indent>Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role_to_code, value)

"""Policy-side MT format: translation prompts and pulling the translation out of a completion."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..languages import language_name
from .gqm import fence_for

# `codeblock-think` is the prompt of the GRRM-optimised MT models (seed 002); `tower` is TowerInstruct's.
MT_PROMPT_TEMPLATES: dict[str, str] = {
    "codeblock-think": (
        "Translate the following text from {source_language} into {target_language}. Perform a step by step "
        "analysis and output the final translation in a code block.\n\nSource text:\n{fenced_source}\n"
    ),
    "codeblock": (
        "Translate the following text from {source_language} into {target_language}. Output only the translation "
        "in a code block.\n\nSource text:\n{fenced_source}\n"
    ),
    "tower": "Translate the following text from {source_language} into {target_language}:\n"
    "{source_language}: {flat_source}\n{target_language}:",
}

# Which extractor fits each prompt style by default.
DEFAULT_EXTRACTOR: dict[str, str] = {"codeblock-think": "codeblock", "codeblock": "codeblock", "tower": "full"}


def build_mt_prompt(
    source_text: str,
    source_language: str,
    target_language: str,
    style: str = "codeblock-think",
    language_names: Mapping[str, str] | None = None,
) -> str:
    """Build the user message asking the policy to translate ``source_text``.

    Example:
        >>> print(build_mt_prompt("Hello.", "en", "de"))
        Translate the following text from English into German. Perform a step by step analysis and output the final translation in a code block.
        <BLANKLINE>
        Source text:
        ```
        Hello.
        ```
        <BLANKLINE>
    """
    if style not in MT_PROMPT_TEMPLATES:
        raise ValueError(f"Unknown MT prompt style {style!r}; choose one of {sorted(MT_PROMPT_TEMPLATES)}")
    fence = fence_for(source_text)
    return MT_PROMPT_TEMPLATES[style].format(
        source_language=language_name(source_language, language_names),
        target_language=language_name(target_language, language_names),
        fenced_source=f"{fence}\n{source_text}\n{fence}",
        flat_source=" ".join(source_text.splitlines()),
    )


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or (conversational) the assistant messages' text content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    parts: list[str] = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content") or ""
        if isinstance(content, str):
            parts.append(content)
        else:  # a list of content blocks
            parts.extend(block.get("text", "") for block in content if block.get("type") == "text")
    return "\n".join(parts)


_FENCED_BLOCK_RE = re.compile(r"(?P<fence>`{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)(?P=fence)(?!`)", re.S)


def extract_codeblock(text: str) -> str | None:
    """The content of the last complete fenced block (its info string dropped), or ``None``.

    Example:
        >>> extract_codeblock("Analysis: ...\\n```\\nBonjour.\\n```")
        'Bonjour.'
    """
    blocks = list(_FENCED_BLOCK_RE.finditer(text))
    return (blocks[-1]["body"].strip() or None) if blocks else None


def extract_codeblock_strict(text: str) -> str | None:
    """The reference implementation's rule: exactly one fenced block, at the very end of the response."""
    stripped = text.rstrip()
    blocks = list(_FENCED_BLOCK_RE.finditer(stripped))
    if len(blocks) != 1 or blocks[0].end() != len(stripped) or stripped.count("```") != 2:
        return None
    return blocks[0]["body"].strip() or None


def extract_last_line(text: str) -> str | None:
    """The last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def extract_full(text: str) -> str | None:
    """The whole completion, stripped."""
    return text.strip() or None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "codeblock": extract_codeblock,
    "codeblock_strict": extract_codeblock_strict,
    "last_line": extract_last_line,
    "full": extract_full,
}


def get_extractor(name_or_fn: str | Callable[[str], str | None]) -> Callable[[str], str | None]:
    """Resolve an extractor by name (``codeblock``, ``codeblock_strict``, ``last_line``, ``full``), by the import path
    ``package.module:function`` of your own (one that also checks the language, say: it must return ``None`` for a
    completion that holds no usable translation), or pass a callable.

    Example:
        >>> get_extractor("full")("  Guten Morgen. ")
        'Guten Morgen.'
        >>> get_extractor("trl_grrm.mini.task:berun_text")("talu velomi")
        'talu velomi'
    """
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn in EXTRACTORS:
        return EXTRACTORS[name_or_fn]
    module_name, colon, attribute = name_or_fn.partition(":")
    if colon:
        import importlib

        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"cannot import the translation extractor {name_or_fn!r}: {error}") from error
        if not callable(function):
            raise ValueError(f"translation extractor {name_or_fn!r} is not callable")
        return function
    raise ValueError(f"Unknown translation extractor {name_or_fn!r}; choose one of {sorted(EXTRACTORS)} or give "
                     "'package.module:function'")

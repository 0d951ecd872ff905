"""The pointwise judge format (Segment Quality Metric): one source, one translation, one 0-10 score.

:func:`build_sqm_prompt` writes the prompt of the GRRM paper's SQM-GenRM baseline byte for byte (checked against
the released ``inference/run_rm_SQM.py``): no blank line between the instruction and ``Source text:``, one blank
line between the two fenced blocks. As in :mod:`trl_grrm.formats.gqm`, the only deviation is deliberate and only
triggers on hostile input: a text containing a run of three or more backticks gets a longer fence.

The answer is free-form analysis with the integer score alone on the last line. :func:`parse_sqm_output` also
forgives cosmetic noise on that line (markdown emphasis, a ``Score:`` lead-in, ``/10``, a trailing period).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..languages import language_name
from .gqm import MAX_SCORE, MIN_SCORE, fence_for


def _fenced(text: str) -> str:
    fence = fence_for(text)
    return f"{fence}\n{text}\n{fence}"


def build_sqm_prompt(
    source_text: str,
    translation: str,
    source_language: str,
    target_language: str,
    language_names: dict[str, str] | None = None,
) -> str:
    """Build the user message that asks a pointwise judge to analyse and score one translation from 0 to 10.

    Example:
        >>> print(build_sqm_prompt("Hi.", "Salut.", "en", "fr"))  # doctest: +NORMALIZE_WHITESPACE
        Given a source text in English and a translation text in French. Perform a step by step analysis of
        translation quality and assign a score on a scale from 0 to 10.
        Source text:
        ```
        Hi.
        ```
        <BLANKLINE>
        Translation text:
        ```
        Salut.
        ```
        <BLANKLINE>
    """
    source_name = language_name(source_language, language_names)
    target_name = language_name(target_language, language_names)
    return (
        f"Given a source text in {source_name} and a translation text in {target_name}. "
        "Perform a step by step analysis of translation quality and assign a score on a scale from 0 to 10.\n"
        f"Source text:\n{_fenced(source_text)}\n\nTranslation text:\n{_fenced(translation)}\n"
    )


def format_sqm_answer(analysis: str, score: int) -> str:
    """Write a pointwise judge answer: the analysis, a blank line, the score alone on the last line.

    Example:
        >>> format_sqm_answer("Fluent and faithful.", 9)
        'Fluent and faithful.\\n\\n9'
    """
    return f"{analysis.strip()}\n\n{int(score)}" if analysis.strip() else str(int(score))


class SQMParseError(ValueError):
    """The judge answer does not end with a usable 0-10 integer score."""


_FULL_WIDTH = str.maketrans({"：": ":", "／": "/", "　": " ", **{chr(0xFF10 + d): str(d) for d in range(10)}})
_SCORE_LINE_RE = re.compile(
    r"^(?:(?:final\s+|overall\s+)?(?:score|rating)\s*[:=]?\s*)?(?P<value>[+-]?\d+)(?:\s*/\s*10)?$", re.I
)


def parse_sqm_output(text: str) -> int:
    """The score on the last non-empty line of a pointwise judge answer.

    Accepted last lines: ``7``, ``**7**``, ```7```, ``7.``, ``7/10``, ``Score: 7``, ``Final score: 7/10``. Anything
    else, or a value outside 0-10, raises :class:`SQMParseError`.

    Example:
        >>> parse_sqm_output("B keeps the idiom.\\n\\n**Score: 8/10**")
        8
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise SQMParseError("empty answer")
    line = lines[-1].translate(_FULL_WIDTH).strip()
    line = re.sub(r"(\*\*|__|`)", "", line).strip().strip("*_").strip().rstrip(".。").strip()
    match = _SCORE_LINE_RE.match(line)
    if not match:
        raise SQMParseError(f"the last line is not a score: {lines[-1].strip()!r}")
    digits = match["value"].lstrip("+-")
    if len(digits) > 2:  # also keeps int() away from answers with thousands of digits
        raise SQMParseError(f"the score has {len(digits)} digits; expected {MIN_SCORE}-{MAX_SCORE}")
    score = int(match["value"])
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise SQMParseError(f"score outside {MIN_SCORE}-{MAX_SCORE}: {score}")
    return score


@dataclass(frozen=True)
class SQMPrompt:
    """The parts of a prompt built by :func:`build_sqm_prompt`."""

    source_language: str
    target_language: str
    source_text: str
    translation: str


_PROMPT_RE = re.compile(
    r"^Given a source text in (?P<src>.+?) and a translation text in (?P<trg>.+?)\. .*?\n"
    r"Source text:\n(?P<f1>`{3,})\n(?P<source>.*?)\n(?P=f1)\n\n"
    r"Translation text:\n(?P<f2>`{3,})\n(?P<translation>.*?)\n(?P=f2)\n$",
    re.S,
)


def parse_sqm_prompt(prompt: str) -> SQMPrompt:
    """Recover languages, source and translation from a pointwise prompt (the inverse of :func:`build_sqm_prompt`).

    Example:
        >>> parse_sqm_prompt(build_sqm_prompt("Hi.", "Salut.", "en", "fr")).translation
        'Salut.'
    """
    match = _PROMPT_RE.match(prompt)
    if not match:
        raise ValueError("not an SQM judge prompt")
    return SQMPrompt(match["src"], match["trg"], match["source"], match["translation"])

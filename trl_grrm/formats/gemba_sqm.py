"""A GEMBA-SQM-style, reference-based LLM-judge format for MT evaluation: one source, one reference, one translation,
one score from 0 to 100.

The GRRM paper reports an LLM-as-a-judge column scored with GEMBA-SQM *with reference* (0-100, from "No meaning
preserved" to "Perfect meaning and grammar"; analysis first, the score on the last line). The exact wording of the
official prompt is not in the material this package was written from, so :func:`build_gemba_sqm_prompt` is written
from that description, not copied: its numbers are comparable in kind with the paper's column, not digit for digit
(docs/reproduction.md).

:func:`parse_gemba_sqm_output` reads the last non-empty line: one integer in 0-100, or ``N/100``.
"""

from __future__ import annotations

import re

from ..languages import language_name
from .gqm import fence_for

GEMBA_MIN_SCORE, GEMBA_MAX_SCORE = 0, 100


def _fenced(text: str) -> str:
    fence = fence_for(text)
    return f"{fence}\n{text}\n{fence}"


def build_gemba_sqm_prompt(
    source_text: str,
    translation: str,
    reference: str,
    source_language: str,
    target_language: str,
    language_names: dict[str, str] | None = None,
) -> str:
    """The user message asking a judge to score one translation against a human reference on a 0-100 scale.

    Example:
        >>> print(build_gemba_sqm_prompt("Hi.", "Salut.", "Bonjour.", "en", "fr"))  # doctest: +NORMALIZE_WHITESPACE
        Score the following translation from English to French with respect to the human reference on a continuous
        scale from 0 ("No meaning preserved") through "Some meaning preserved" and "Most meaning preserved and few
        grammar mistakes" up to 100 ("Perfect meaning and grammar").
        <BLANKLINE>
        English source text:
        ```
        Hi.
        ```
        <BLANKLINE>
        French human reference:
        ```
        Bonjour.
        ```
        <BLANKLINE>
        French translation:
        ```
        Salut.
        ```
        <BLANKLINE>
        Write your analysis first, then the score (0-100) alone on the last line.
    """
    source_name = language_name(source_language, language_names)
    target_name = language_name(target_language, language_names)
    return (
        f"Score the following translation from {source_name} to {target_name} with respect to the human reference "
        'on a continuous scale from 0 ("No meaning preserved") through "Some meaning preserved" and "Most meaning '
        'preserved and few grammar mistakes" up to 100 ("Perfect meaning and grammar").\n\n'
        f"{source_name} source text:\n{_fenced(source_text)}\n\n"
        f"{target_name} human reference:\n{_fenced(reference)}\n\n"
        f"{target_name} translation:\n{_fenced(translation)}\n\n"
        "Write your analysis first, then the score (0-100) alone on the last line."
    )


class GembaSQMParseError(ValueError):
    """A GEMBA-SQM answer whose last line is not one score in 0-100."""


_INT_RE = re.compile(r"\d+")


def parse_gemba_sqm_output(text: str) -> int:
    """The 0-100 score on the answer's last non-empty line: one integer, or ``N/100`` (markdown and a ``Score:``
    lead-in are ignored).

    Example:
        >>> parse_gemba_sqm_output("The meaning is kept.\\n**Score: 85/100**")
        85
        >>> parse_gemba_sqm_output("Fine.\\n92")
        92
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise GembaSQMParseError("empty answer")
    last = lines[-1]
    digits = _INT_RE.findall(last)
    if any(len(d) > 3 for d in digits):  # also keeps int() away from answers with thousands of digits
        raise GembaSQMParseError(f"a number on the last line has more than 3 digits: {last[:80]!r}")
    numbers = [int(d) for d in digits]
    if len(numbers) == 2 and numbers[1] == GEMBA_MAX_SCORE:
        numbers = numbers[:1]
    if len(numbers) != 1:
        raise GembaSQMParseError(f"expected one score (0-100) on the last line, got {last!r}")
    score = numbers[0]
    if not GEMBA_MIN_SCORE <= score <= GEMBA_MAX_SCORE:
        raise GembaSQMParseError(f"score {score} is outside 0-100 (last line {last!r})")
    return score

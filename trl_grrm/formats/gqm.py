"""The GRRM judge format (Group Quality Metric): prompt building and output parsing.

The prompt is byte for byte the one the released GRRM models were trained on (``ranking_score`` task, no output
example). The only deviation is deliberate and only triggers on hostile input: a text that itself contains a run of
three or more backticks is wrapped in a longer fence, so it cannot close its block early.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..languages import language_name
from ..ranking import Ranking, format_ranking, parse_ranking, ranking_agrees_with_scores, scores_to_ranking

CANDIDATE_IDS: tuple[str, ...] = tuple(string.ascii_uppercase)
"""Candidate letters. GRRM was trained on groups of 2-4; up to 26 are accepted."""

TASK_LINES: dict[str, str] = {
    "score": "Finally, score the candidates with integer scores on a scale from 0 to 10.",
    "ranking": "Finally, rank the candidates in order of quality from best to worst.",
    "ranking_score": "Finally, rank and score the candidates with integer scores on a scale from 0 to 10.",
}

MIN_SCORE, MAX_SCORE = 0, 10


def fence_for(text: str) -> str:
    """The shortest backtick fence (at least three) that ``text`` cannot close.

    Example:
        >>> fence_for("plain"), fence_for("has ``` inside")
        ('```', '````')
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _fenced(text: str) -> str:
    fence = fence_for(text)
    return f"{fence}\n{text}\n{fence}"


def build_gqm_prompt(
    source_text: str,
    candidates: Sequence[str],
    source_language: str,
    target_language: str,
    task: str = "ranking_score",
    language_names: Mapping[str, str] | None = None,
) -> str:
    """Build the user message that asks the judge to analyse, rank and score a group of translations.

    Languages may be codes (``"zh"``) or names (``"Chinese"``).

    Example:
        >>> print(build_gqm_prompt("Hi.", ["Salut.", "Bonjour."], "en", "fr"))  # doctest: +NORMALIZE_WHITESPACE
        Given a source text in English and multiple translation candidates in French. Perform a step by step
        analysis and comparison of the translation quality for the candidates. Finally, rank and score the
        candidates with integer scores on a scale from 0 to 10.
        <BLANKLINE>
        Source text:
        ```
        Hi.
        ```
        <BLANKLINE>
        Translation A:
        ```
        Salut.
        ```
        Translation B:
        ```
        Bonjour.
        ```
        <BLANKLINE>
    """
    if task not in TASK_LINES:
        raise ValueError(f"Unknown judge task {task!r}; choose one of {sorted(TASK_LINES)}")
    if len(candidates) < 2:
        raise ValueError(f"A group needs at least 2 candidates, got {len(candidates)}")
    if len(candidates) > len(CANDIDATE_IDS):
        raise ValueError(f"At most {len(CANDIDATE_IDS)} candidates fit the A-Z ids, got {len(candidates)}")
    source_name = language_name(source_language, language_names)
    target_name = language_name(target_language, language_names)
    header = (
        f"Given a source text in {source_name} and multiple translation candidates in {target_name}. "
        "Perform a step by step analysis and comparison of the translation quality for the candidates. "
        f"{TASK_LINES[task]}\n\nSource text:\n{_fenced(source_text)}\n\n"
    )
    blocks = "".join(f"Translation {cid}:\n{_fenced(text)}\n" for cid, text in zip(CANDIDATE_IDS, candidates))
    return header + blocks


def format_gqm_answer(analysis: str, scores: Mapping[str, int]) -> str:
    """Write a judge answer in the format GRRM was fine-tuned to produce (ranking derived from the scores).

    Scores are listed in ranking order, as in the GRRM SFT data.

    Example:
        >>> print(format_gqm_answer("B misses the idiom.", {"A": 8, "B": 3}))
        B misses the idiom.
        <BLANKLINE>
        ### Final Ranking:
        <BLANKLINE>
        A > B
        <BLANKLINE>
        ### Scores:
        <BLANKLINE>
        A: 8, B: 3
        <BLANKLINE>
    """
    tiers = scores_to_ranking(scores)
    scores_line = ", ".join(f"{cid}: {scores[cid]}" for tier in tiers for cid in tier)
    return f"{analysis}\n\n### Final Ranking:\n\n{format_ranking(tiers)}\n\n### Scores:\n\n{scores_line}\n"


class GQMParseError(ValueError):
    """The judge output does not contain a usable scores line for the expected candidates."""


@dataclass(frozen=True)
class GQMJudgment:
    """What one judge answer says about a group.

    ``scores`` maps every expected id to an integer 0-10. ``ranking`` is ``None`` when the answer had no ranking
    line; ``ranking_agrees`` is ``None`` then, else whether the ranking orders every pair as the scores do.
    ``revised_scores`` is ``True`` when a later complete scores line changed the scores under the ``Scores`` header
    (the later line wins, as in the official code, which reads the last line).
    """

    scores: dict[str, int]
    ranking: Ranking | None
    ranking_agrees: bool | None
    analysis: str
    revised_scores: bool = False

    def ordered_scores(self, ids: Sequence[str]) -> list[int]:
        return [self.scores[cid] for cid in ids]


_FULL_WIDTH = str.maketrans({"：": ":", "，": ",", "＞": ">", "＝": "=", "　": " ", "；": ";"})
_HEADER_RE = re.compile(r"^(?:#+\s*)?(?:final\s+)?(?P<kind>rankings?|scores?|scoring)\s*(?P<colon>:)?\s*(?P<rest>.*)$", re.I)
_SCORE_ITEM_RE = re.compile(r"^(?:(?:translation|candidate)\s+)?(?P<id>[A-Za-z]{1,2})\s*:\s*(?P<value>.+?)$", re.I)
_INTEGER_RE = re.compile(r"^[+-]?\d+$")
# 0-10 needs two digits; longer digit runs are rejected before int(), which refuses more than 4300 digits itself.
_MAX_SCORE_DIGITS = 2


def _shorten(text: str, limit: int = 80) -> str:
    """``text`` cut for an error message: a looping judge can write lines of any length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _clean_line(line: str) -> str:
    line = line.translate(_FULL_WIDTH).strip()
    # Markdown emphasis and inline code around (parts of) the line carry no meaning here.
    line = re.sub(r"(\*\*|__|`)", "", line).strip()
    line = line.strip("*_").strip()
    return line.rstrip(".。").strip()


def _parse_scores_line(line: str, expected_ids: Sequence[str]) -> dict[str, int]:
    items = [item.strip() for item in line.split(",")]
    scores: dict[str, int] = {}
    for item in items:
        match = _SCORE_ITEM_RE.match(item)
        if not match:
            raise GQMParseError(f"not a scores line: {_shorten(line)!r}")
        cid, value = match["id"], match["value"].strip()
        if cid not in expected_ids:
            raise GQMParseError(f"unknown candidate {cid!r} in scores line {_shorten(line)!r}")
        if cid in scores:
            raise GQMParseError(f"candidate {cid!r} scored twice in {_shorten(line)!r}")
        if not _INTEGER_RE.match(value):
            raise GQMParseError(f"score of {cid} is not an integer: {_shorten(value)!r}")
        digits = len(value.lstrip("+-"))
        if digits > _MAX_SCORE_DIGITS:
            raise GQMParseError(
                f"score of {cid} has {digits} digits, outside {MIN_SCORE}-{MAX_SCORE}: {_shorten(value)!r}"
            )
        score = int(value)
        if not MIN_SCORE <= score <= MAX_SCORE:
            raise GQMParseError(f"score of {cid} is outside {MIN_SCORE}-{MAX_SCORE}: {score}")
        scores[cid] = score
    missing = [cid for cid in expected_ids if cid not in scores]
    if missing:
        raise GQMParseError(f"no score for candidate(s) {', '.join(missing)} in {_shorten(line)!r}")
    return scores


def _next_content(lines: list[str], start: int) -> int | None:
    return next((i for i in range(start, len(lines)) if lines[i]), None)


def _last_complete_scores(lines: list[str], start: int, expected_ids: Sequence[str]) -> dict[str, int] | None:
    """The scores of the last line from ``start`` on that is a complete scores line (bare or after a header)."""
    for line in reversed(lines[start:]):
        header = _HEADER_RE.match(line)
        text = header["rest"].strip() if header and header["colon"] and header["rest"] else line
        if not text:
            continue
        try:
            return _parse_scores_line(text, expected_ids)
        except GQMParseError:
            continue
    return None


def parse_gqm_output(text: str, expected_ids: Sequence[str]) -> GQMJudgment:
    """Parse a GRRM answer into per-candidate scores and the ranking.

    The scores line is the line under the last ``Scores`` header, or else the last non-empty line. When a complete
    scores line follows it (the judge revised its scores), the last such line wins and ``revised_scores`` tells
    whether the scores changed. The ranking is the line under the last ``Final Ranking`` header, or else a
    ranking-shaped line right before the scores. Tolerated: blank lines and spaces, ``**``/``__``/backticks, a
    trailing period, full-width ``：`` and ``，``, scores in any order, a missing ranking. Raises
    :class:`GQMParseError` on a missing, repeated or unknown id, a score that is not an integer in 0-10 (at most two
    digits), or no scores line.

    Example:
        >>> j = parse_gqm_output("...\\n### Final Ranking:\\nA > B\\n### Scores:\\n**B: 3, A: 8**", ["A", "B"])
        >>> j.scores, j.ranking, j.ranking_agrees
        ({'B': 3, 'A': 8}, [['A'], ['B']], True)
        >>> j = parse_gqm_output("...\\n### Scores:\\nA: 8, B: 3\\nOn reflection, B is fine:\\nA: 8, B: 6", ["A", "B"])
        >>> j.scores, j.revised_scores
        ({'A': 8, 'B': 6}, True)
    """
    expected_ids = list(expected_ids)
    lines = [_clean_line(line) for line in text.splitlines()]
    headers = {"ranking": [], "scores": []}
    for index, line in enumerate(lines):
        match = _HEADER_RE.match(line)
        # "Scores are close" is prose; a header is bare ("### Scores") or has a colon ("Scores: A: 8, B: 3").
        if match and (not match["rest"] or match["colon"]):
            kind = "ranking" if match["kind"].lower().startswith("rank") else "scores"
            headers[kind].append((index, match["rest"].strip()))

    scores_index: int | None
    if headers["scores"]:
        header_index, inline = headers["scores"][-1]
        scores_index = header_index if inline else _next_content(lines, header_index + 1)
        scores_line = inline or (lines[scores_index] if scores_index is not None else "")
    else:
        scores_index = max((i for i, line in enumerate(lines) if line), default=None)
        scores_line = lines[scores_index] if scores_index is not None else ""
    if not scores_line:
        raise GQMParseError("no scores line")
    try:
        scores: dict[str, int] | None = _parse_scores_line(scores_line, expected_ids)
    except GQMParseError as error:
        scores, parse_error = None, error
    revised = False
    later = _last_complete_scores(lines, scores_index + 1, expected_ids) if scores_index is not None else None
    if later is not None:
        revised = scores is not None and later != scores
        scores = later
    elif scores is None:
        raise parse_error

    ranking_line: str | None = None
    analysis_end = scores_index if scores_index is not None else len(lines)
    ranking_headers = [(i, rest) for i, rest in headers["ranking"] if i < analysis_end]
    if ranking_headers:
        header_index, inline = ranking_headers[-1]
        analysis_end = header_index
        if inline:
            ranking_line = inline
        else:
            found = _next_content(lines, header_index + 1)
            before_scores = found is not None and (scores_index is None or found < scores_index)
            ranking_line = lines[found] if before_scores else ""
    else:
        if headers["scores"]:
            analysis_end = min(analysis_end, headers["scores"][-1][0])
        previous = max((i for i in range(analysis_end) if lines[i]), default=None)
        if previous is not None and re.fullmatch(r"[A-Z](?:\s*[>=]\s*[A-Z])+", lines[previous]):
            ranking_line, analysis_end = lines[previous], previous

    ranking: Ranking | None = None
    agrees: bool | None = None
    if ranking_line is not None:
        try:
            ranking = parse_ranking(ranking_line)
        except ValueError:
            ranking = None
        agrees = ranking is not None and ranking_agrees_with_scores(ranking, scores)
    analysis = "\n".join(text.splitlines()[:analysis_end]).strip()
    return GQMJudgment(scores=scores, ranking=ranking, ranking_agrees=agrees, analysis=analysis, revised_scores=revised)


@dataclass(frozen=True)
class GQMPrompt:
    """The parts of a judge prompt built by :func:`build_gqm_prompt`."""

    source_language: str
    target_language: str
    source_text: str
    candidates: list[str]


_PROMPT_HEAD_RE = re.compile(
    r"^Given a source text in (?P<src>.+?) and multiple translation candidates in (?P<trg>.+?)\. "
    r".*?\n\nSource text:\n(?P<fence>`{3,})\n(?P<source>.*?)\n(?P=fence)\n\n",
    re.S,
)
_PROMPT_CANDIDATE_RE = re.compile(r"Translation (?P<id>[A-Z]):\n(?P<fence>`{3,})\n(?P<text>.*?)\n(?P=fence)\n", re.S)


def parse_gqm_prompt(prompt: str) -> GQMPrompt:
    """Recover languages, source and candidates from a judge prompt (the inverse of :func:`build_gqm_prompt`).

    Example:
        >>> parse_gqm_prompt(build_gqm_prompt("Hi.", ["Salut.", "Bonjour."], "en", "fr")).candidates
        ['Salut.', 'Bonjour.']
    """
    head = _PROMPT_HEAD_RE.match(prompt)
    if not head:
        raise ValueError("not a GQM judge prompt")
    candidates = []
    position = head.end()
    for expected in CANDIDATE_IDS:
        match = _PROMPT_CANDIDATE_RE.match(prompt, position)
        if not match:
            break
        if match["id"] != expected:
            raise ValueError(f"candidate {match['id']} where {expected} was expected")
        candidates.append(match["text"])
        position = match.end()
    if position != len(prompt) or len(candidates) < 2:
        raise ValueError("malformed candidate blocks in GQM judge prompt")
    return GQMPrompt(head["src"], head["trg"], head["source"], candidates)

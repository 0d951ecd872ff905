"""One vocabulary for why a judge gave no scores, used by the reward function's metrics and audit log and by the
``eval-ranking`` / ``eval-mt`` tables and JSON.

* ``unavailable``: the engine never answered (server down, timeouts, malformed replies after its retries);
* ``prompt_too_long``: the judge prompt does not fit the judge's context, so it was not (or could not be) asked;
* ``truncated``: every answer hit the token limit (a cut answer is not a judgment), also after the re-asks;
* ``parse_failed``: the judge answered, but no answer had a usable scores line, also after the re-asks;
* ``too_few_distinct``: (reward function only) the group had fewer than two distinct valid translations, so there
  was nothing to compare and no judge call.

A configuration error (unknown model, rejected key) is not in this list: it raises
:class:`~trl_grrm.engines.JudgeConfigurationError` and stops the run.

Example:
    >>> describe_failures({"unavailable": 3, "parse_failed": 0, "truncated": 1})
    '3 unavailable, 1 truncated'
"""

from __future__ import annotations

from collections.abc import Mapping

from ..engines.base import PROMPT_TOO_LONG, TRUNCATED, UNAVAILABLE

PARSE_FAILED = "parse_failed"
TOO_FEW_DISTINCT = "too_few_distinct"

#: Why a judge that was asked gave no scores, the most telling first (an engine problem before a format problem).
JUDGE_FAILURES: tuple[str, ...] = (UNAVAILABLE, PROMPT_TOO_LONG, TRUNCATED, PARSE_FAILED)


def describe_failures(counts: Mapping[str, int]) -> str:
    """The non-zero counts as ``"3 unavailable, 1 truncated"``, in :data:`JUDGE_FAILURES` order first."""
    order = [*JUDGE_FAILURES, *(k for k in counts if k not in JUDGE_FAILURES)]
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))

"""The one judging loop of the package: batch every prompt of a round into one engine call, ask again what is not a
judgment, count each failure by its reason, keep an audit record of every attempt.

The reward functions (:class:`~trl_grrm.rewards.GroupRelativeRewardFunction`), ``trl-grrm eval-ranking``, the judges
of ``trl-grrm eval-mt`` and :func:`rank` / :func:`best_of_n` all judge through :class:`JudgeRunner`.

Example:
    >>> from trl_grrm.formats.gqm import format_gqm_answer
    >>> from trl_grrm.judging import GQMJudge, JudgeGroup, JudgeTask
    >>> from trl_grrm.testing.scripted_engine import ScriptedEngine
    >>> engine = ScriptedEngine(lambda prompt, attempt, sampling: format_gqm_answer("ok", {"A": 2, "B": 8}))
    >>> task = JudgeTask(JudgeGroup("Hi.", ["Salut.", "Bonjour."], "en", "fr"), order=[1, 0])  # shown: B-side first
    >>> [done] = JudgeRunner(engine).run(GQMJudge(), [task])
    >>> done.scores, done.failure  # in the group's own order
    ([8, 2], None)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engines.base import PROMPT_TOO_LONG, TRUNCATED, UNAVAILABLE, JudgeEngine, JudgeOutput, Messages, SamplingSettings
from .failures import JUDGE_FAILURES, PARSE_FAILED
from .protocol import JudgeAnswerError, JudgeFormat, JudgeGroup

#: Most re-asks a policy may ask for: beyond that a judge that cannot answer is broken, not unlucky.
MAX_RETRIES_LIMIT = 10
#: Seed offset per attempt (a prime, so seeds of different attempts of nearby base seeds do not collide).
SEED_STRIDE = 1_000_003

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how, an answer that is not a judgment (unparsable or cut at the token limit) is asked again.

    The schedule (one for the whole package):

    * attempt 0 uses the caller's sampling as given;
    * every re-ask uses ``max(retry_temperature, sampling.temperature)``: a re-ask is meant to get a *different*
      answer, so it never samples colder than the first attempt;
    * attempt ``a`` uses the seed ``sampling.seed + SEED_STRIDE * a`` (``None`` stays ``None``): a re-ask at the
      same seed would repeat the failed answer, and a seeded run stays reproducible.

    Engine errors (``unavailable``, ``prompt_too_long``) are never re-asked here: the engines retry transport
    errors themselves. Verdict log-probabilities are deterministic, so they are asked once.

    Example:
        >>> policy = RetryPolicy(max_retries=2, retry_temperature=0.8)
        >>> [(s.temperature, s.seed) for s in (policy.sampling(SamplingSettings(seed=5), a) for a in range(3))]
        [(0.0, 5), (0.8, 1000008), (0.8, 2000011)]
    """

    max_retries: int = 2
    retry_temperature: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_retries <= MAX_RETRIES_LIMIT:
            raise ValueError(f"max_retries must be in 0..{MAX_RETRIES_LIMIT}, got {self.max_retries}")
        if self.retry_temperature < 0:
            raise ValueError(f"retry_temperature must be >= 0, got {self.retry_temperature}")

    def sampling(self, base: SamplingSettings, attempt: int) -> SamplingSettings:
        """The sampling settings of attempt ``attempt`` (0 = the first ask)."""
        if attempt == 0:
            return base
        return SamplingSettings(
            temperature=max(self.retry_temperature, base.temperature),
            top_p=base.top_p,
            max_tokens=base.max_tokens,
            seed=None if base.seed is None else base.seed + SEED_STRIDE * attempt,
        )


@dataclass
class JudgeRequest:
    """One prompt of a task and everything that happened to it."""

    task: JudgeTask
    prompt_index: int
    messages: Messages
    #: One audit record per attempt: ``attempt``, ``temperature``, ``response``, token counts, and ``error`` /
    #: ``truncated`` / ``detail`` / ``parse_error`` / ``parsed`` as they apply.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    parsed: Any = None
    done: bool = False
    failure: str | None = None  # one of trl_grrm.judging.failures.JUDGE_FAILURES


@dataclass
class JudgeTask:
    """One group to judge in one candidate order, and its outcome once :meth:`JudgeRunner.run` returns.

    ``order[i]`` is the index in ``group.candidates`` of the candidate shown at position ``i`` (``None``: as stored).
    ``scores`` are in the group's own order; ``failure`` is the most telling reason (engine problems first) when any
    prompt of the task got no judgment, and ``scores`` is then ``None`` (a format with ``partial_results``, e.g.
    GQM subgroups, may still score the task from the prompts that were judged; the failed ones keep their
    ``failure``).
    """

    group: Any  # a JudgeGroup, or any object with the attributes formats read
    order: list[int] | None = None
    requests: list[JudgeRequest] = field(default_factory=list)
    scores: list[float] | None = None
    failure: str | None = None

    def __post_init__(self) -> None:
        if self.order is None:
            self.order = list(range(len(self.group.candidates)))

    @property
    def parsed(self) -> list[Any]:
        """The parsed answers, in prompt order (``None`` for prompts without a judgment)."""
        return [r.parsed for r in self.requests]


class JudgeRunner:
    """Judges tasks through one engine: one batched engine call per round, re-asks per :class:`RetryPolicy`.

    ``sampling`` is the first attempt's sampling. ``max_prompt_tokens`` (and the engine's own
    ``max_prompt_tokens``) drop longer prompts before they are sent, as ``prompt_too_long``, when the engine can
    count tokens. ``on_unavailable="raise"`` raises ``RuntimeError("judge engine unavailable: ...")`` instead of
    counting an engine that could not answer. A :class:`~trl_grrm.engines.JudgeConfigurationError` always
    propagates: no re-ask can help.
    """

    def __init__(
        self,
        engine: JudgeEngine,
        policy: RetryPolicy | None = None,
        sampling: SamplingSettings | None = None,
        *,
        max_prompt_tokens: int | None = None,
        on_unavailable: str = "fallback",
    ) -> None:
        if on_unavailable not in ("fallback", "raise"):
            raise ValueError(f"on_unavailable must be 'fallback' or 'raise', got {on_unavailable!r}")
        self.engine = engine
        self.policy = policy or RetryPolicy()
        self.sampling = sampling or SamplingSettings()
        self.max_prompt_tokens = max_prompt_tokens
        self.on_unavailable = on_unavailable

    def run(self, judge: JudgeFormat, tasks: Sequence[JudgeTask], progress: Progress | None = None) -> list[JudgeTask]:
        """Judge every task with ``judge``; fills and returns ``tasks``.

        ``progress(completed, total, description)`` is called before the first round and after each round.
        """
        requests: list[JudgeRequest] = []
        for task in tasks:
            shown = [task.group.candidates[i] for i in task.order]
            task.requests = [JudgeRequest(task, k, m) for k, m in enumerate(judge.prompts(task.group, shown))]
            requests.extend(task.requests)
        pending = self._drop_long_prompts(requests)
        total, completed = len(requests), len(requests) - len(pending)
        rounds = 1 if judge.output_kind == "verdict_logprobs" else self.policy.max_retries + 1
        if progress is not None:
            progress(completed, total, "round 1")
        for attempt in range(rounds):
            if not pending:
                break
            sampling = self.policy.sampling(self.sampling, attempt)
            messages = [r.messages for r in pending]
            if judge.output_kind == "verdict_logprobs":
                outputs = self.engine.verdict_logprobs(messages, judge.verdict_tokens, judge.verdict_top_k)
            else:
                outputs = self.engine.generate(messages, sampling)
            if len(outputs) != len(pending):
                raise RuntimeError(f"the engine answered {len(outputs)} of {len(pending)} prompts")
            for request, output in zip(pending, outputs):
                self._accept(judge, request, output, attempt, sampling.temperature)
            if attempt == rounds - 1:
                for request in pending:
                    if not request.done:  # what the last answer was decides the reason
                        request.done = True
                        request.failure = TRUNCATED if request.attempts[-1].get("truncated") else PARSE_FAILED
            completed += sum(r.done for r in pending)
            pending = [r for r in pending if not r.done]
            if progress is not None:
                progress(completed, total, f"retry {attempt + 1}/{rounds - 1}" if pending else "done")
        for task in tasks:
            self._combine(judge, task)
        return list(tasks)

    def _drop_long_prompts(self, requests: list[JudgeRequest]) -> list[JudgeRequest]:
        limits = [x for x in (self.max_prompt_tokens, self.engine.max_prompt_tokens) if x is not None]
        if not requests or not limits:
            return requests
        lengths = self.engine.count_prompt_tokens([r.messages for r in requests])
        if lengths is None:
            return requests
        kept = []
        for request, length in zip(requests, lengths):
            if length > min(limits):
                request.done, request.failure = True, PROMPT_TOO_LONG
            else:
                kept.append(request)
        return kept

    def _accept(
        self, judge: JudgeFormat, request: JudgeRequest, output: JudgeOutput, attempt: int, temperature: float
    ) -> None:
        record: dict[str, Any] = {"attempt": attempt, "temperature": temperature, "response": output.text}
        record["prompt_tokens"], record["completion_tokens"] = output.prompt_tokens, output.completion_tokens
        if output.finish_reason is not None:
            record["finish_reason"] = output.finish_reason
        if output.request_retries:
            record["request_retries"] = output.request_retries
        if output.verdict_logprobs is not None:
            record["verdict_logprobs"] = output.verdict_logprobs
        request.attempts.append(record)
        if output.error == TRUNCATED:
            # A cut answer is not a judgment, even when what is left parses ("D: 10" cut to "D: 1"): asked again.
            record["error"], record["truncated"] = TRUNCATED, True
            return
        if output.error is not None:
            record["error"], record["detail"] = output.error, output.detail
            request.done = True
            request.failure = PROMPT_TOO_LONG if output.error == PROMPT_TOO_LONG else UNAVAILABLE
            if request.failure == UNAVAILABLE and self.on_unavailable == "raise":
                raise RuntimeError(f"judge engine unavailable: {output.detail}")
            return
        try:
            parsed = judge.parse(output, request.prompt_index, len(request.task.order))
        except ValueError as error:
            record["parse_error"] = str(error)
            return
        record["parsed"] = parsed
        request.parsed, request.done = parsed, True

    @staticmethod
    def _combine(judge: JudgeFormat, task: JudgeTask) -> None:
        failures = [r.failure for r in task.requests if r.failure]
        most_telling = next((f for f in JUDGE_FAILURES if f in failures), failures[0]) if failures else None
        if failures and not (judge.partial_results and len(failures) < len(task.requests)):
            task.failure = most_telling
            return
        n = len(task.order)
        try:
            shown_scores = judge.combine(task.parsed, n)
        except JudgeAnswerError:
            if not failures:
                raise
            task.failure = most_telling  # what was judged is not enough (e.g. no longer connects the group)
            return
        if len(shown_scores) != n:
            raise RuntimeError(f"judge {judge.name} returned {len(shown_scores)} scores for {n} candidates")
        scores: list[float] = [0.0] * n
        for position, original in enumerate(task.order):
            scores[original] = shown_scores[position]
        task.scores = scores


# -- inference helpers -----------------------------------------------------------------------------------------


@dataclass
class Ranking:
    """The judge's verdict on one group: ``scores`` per candidate (``None`` when the judge gave none, see
    ``failure``), ``ranking`` (candidate indices, best first; ties keep the input order) and the ``winner``."""

    scores: list[float] | None
    ranking: list[int] | None
    winner: int | None
    failure: str | None
    task: JudgeTask

    @classmethod
    def from_task(cls, task: JudgeTask) -> Ranking:
        if task.scores is None:
            return cls(None, None, None, task.failure, task)
        order = sorted(range(len(task.scores)), key=lambda i: -task.scores[i])
        return cls(list(task.scores), order, order[0], None, task)


def rank(
    judge: JudgeFormat,
    engine: JudgeEngine,
    sources: str | Sequence[str],
    candidates: Sequence[str] | Sequence[Sequence[str]],
    *,
    source_language: str | Sequence[str] | None = None,
    target_language: str | Sequence[str] | None = None,
    references: str | Sequence[str | None] | None = None,
    sampling: SamplingSettings | None = None,
    policy: RetryPolicy | None = None,
    shuffle_seed: int | None = None,
) -> list[Ranking]:
    """Rank the candidates of one or many groups with ``judge`` through ``engine``, all groups in one batched run.

    ``sources`` is one source (then ``candidates`` is one list) or one per group (then ``candidates`` is a list of
    lists); languages and references are one for all groups or one per group. ``shuffle_seed`` shows every group's
    candidates in a seeded random order (a position-bias control); scores always come back in the input order.

    Example:
        >>> from trl_grrm.formats.gqm import format_gqm_answer, parse_gqm_prompt
        >>> from trl_grrm.judging import GQMJudge
        >>> from trl_grrm.testing.scripted_engine import ScriptedEngine
        >>> def longest_wins(prompt, attempt, sampling):
        ...     shown = parse_gqm_prompt(prompt).candidates
        ...     return format_gqm_answer("ok", {"ABC"[i]: len(c) for i, c in enumerate(shown)})
        >>> [result] = rank(GQMJudge(), ScriptedEngine(longest_wins), "Hi.", ["Salut.", "Bonjour.", "Hé."],
        ...                 source_language="en", target_language="fr")
        >>> result.scores, result.ranking, result.winner
        ([6, 8, 3], [1, 0, 2], 1)
    """
    single = isinstance(sources, str)
    source_list = [sources] if single else list(sources)
    groups_candidates = [list(candidates)] if single else [list(c) for c in candidates]
    if len(groups_candidates) != len(source_list):
        raise ValueError(f"got {len(source_list)} sources but {len(groups_candidates)} candidate lists")

    def per_group(value: Any, name: str) -> list[Any]:
        if value is None or isinstance(value, str):
            return [value] * len(source_list)
        values = list(value)
        if len(values) != len(source_list):
            raise ValueError(f"got {len(values)} values of {name} for {len(source_list)} groups")
        return values

    languages = zip(per_group(source_language, "source_language"), per_group(target_language, "target_language"))
    refs = per_group(references, "references")
    tasks = []
    for index, ((src_lang, trg_lang), source, group_candidates, reference) in enumerate(
        zip(languages, source_list, groups_candidates, refs)
    ):
        if not group_candidates:
            raise ValueError(f"group {index} has no candidates")
        if judge.max_candidates is not None and len(group_candidates) > judge.max_candidates:
            raise ValueError(
                f"group {index} has {len(group_candidates)} candidates; the {judge.name} judge takes at most "
                f"{judge.max_candidates}"
            )
        order = list(range(len(group_candidates)))
        if shuffle_seed is not None:
            random.Random(f"{shuffle_seed}-{index}").shuffle(order)
        group = JudgeGroup(source, group_candidates, src_lang, trg_lang, reference, key=index)
        tasks.append(JudgeTask(group, order))
    JudgeRunner(engine, policy, sampling).run(judge, tasks)
    return [Ranking.from_task(task) for task in tasks]


def best_of_n(
    judge: JudgeFormat,
    engine: JudgeEngine,
    sources: str | Sequence[str],
    candidates: Sequence[str] | Sequence[Sequence[str]],
    **kwargs: Any,
) -> list[str | None]:
    """The judge's best candidate of each group (``None`` where the judge gave no scores); same arguments as
    :func:`rank`. Ties go to the earlier candidate.

    Example:
        >>> from trl_grrm.judging import SQMJudge
        >>> from trl_grrm.formats.sqm import format_sqm_answer, parse_sqm_prompt
        >>> from trl_grrm.testing.scripted_engine import ScriptedEngine
        >>> engine = ScriptedEngine(lambda p, a, s: format_sqm_answer("ok", len(parse_sqm_prompt(p).translation)))
        >>> best_of_n(SQMJudge(), engine, ["Hi.", "Bye."], [["Salut.", "Bonjour."], ["Ciao.", "Au revoir."]],
        ...           source_language="en", target_language="fr")
        ['Bonjour.', 'Au revoir.']
    """
    rankings = rank(judge, engine, sources, candidates, **kwargs)
    single = isinstance(sources, str)
    groups_candidates = [list(candidates)] if single else [list(c) for c in candidates]
    return [None if r.winner is None else group[r.winner] for r, group in zip(rankings, groups_candidates)]


def attempt_counts(attempts: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Counts over audit records of attempts (:attr:`JudgeRequest.attempts`), shared by the reward metrics and the
    evaluation summaries: ``judge_calls`` (attempts), ``retries`` (re-asks), ``answers`` (complete answers),
    ``parse_failures`` (complete answers that did not parse), ``received`` (answers with text, cut or not),
    ``truncated_answers``, ``request_retries`` (transport retries inside the engine) and the token totals.

    Example:
        >>> attempt_counts([{"attempt": 0, "error": "truncated", "truncated": True}, {"attempt": 1, "parsed": 3}])
        ... # doctest: +NORMALIZE_WHITESPACE
        {'judge_calls': 2, 'retries': 1, 'answers': 1, 'parse_failures': 0, 'received': 2, 'truncated_answers': 1,
         'request_retries': 0, 'prompt_tokens': 0, 'completion_tokens': 0}
    """
    answered = [a for a in attempts if "error" not in a]
    return {
        "judge_calls": len(attempts),
        "retries": sum(a["attempt"] > 0 for a in attempts),
        "answers": len(answered),
        "parse_failures": sum("parse_error" in a for a in answered),
        "received": sum(a.get("error") in (None, TRUNCATED) for a in attempts),
        "truncated_answers": sum(bool(a.get("truncated")) for a in attempts),
        "request_retries": sum(a.get("request_retries", 0) for a in attempts),
        "prompt_tokens": sum(a.get("prompt_tokens", 0) for a in attempts),
        "completion_tokens": sum(a.get("completion_tokens", 0) for a in attempts),
    }

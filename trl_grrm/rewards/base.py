"""What every group-judging TRL reward function shares: gathering completions across processes, cutting them into
GRPO groups, input checks, spreading groups over the processes' engines, shipping failures to every process,
metrics and the audit log. :class:`~trl_grrm.rewards.GroupRelativeRewardFunction` (GQM) and
:class:`~trl_grrm.rewards.PairwiseRewardFunction` (GRAM, GRAM-R²) differ only in the hooks below."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import distributed
from ..engines import (
    VLLM_MEMORY_SHARE_BESIDE_TRAINING,
    EngineConfig,
    JudgeConfig,
    JudgeConfigurationError,
    JudgeEngine,
    SamplingSettings,  # noqa: F401  (kept importable from here)
    build_engine,
)
from ..engines.config import LEGACY_JUDGE_KEYS
from ..judging import JudgeRunner, RetryPolicy, attempt_counts
from ..judging.failures import PARSE_FAILED, PROMPT_TOO_LONG, TOO_FEW_DISTINCT, TRUNCATED, UNAVAILABLE
from .penalties import soft_overlong_penalty

logger = logging.getLogger(__name__)

# Why a group got no judge scores (see trl_grrm.judging.failures). Each has its own counter in the logs.
UNJUDGED_REASONS = (TOO_FEW_DISTINCT, PROMPT_TOO_LONG, PARSE_FAILED, TRUNCATED, UNAVAILABLE)
# Metric names kept for dashboards made before the vocabulary was shared with the evaluation commands.
_LEGACY_REASON_METRICS = {UNAVAILABLE: "judge_unavailable"}


class JudgeOptions:
    """What the reward configs share: one nested ``judge`` (:class:`~trl_grrm.engines.JudgeConfig`: engine, sampling,
    retries), the engine and judging core it describes, and the old flat spellings of its options.

    Mixed into :class:`GroupRelativeRewardConfig` and :class:`PairwiseRewardConfig`, whose ``judge`` field it
    normalises (:meth:`_init_judge`). The old flat keywords (``judge_model=``, ``backend=``, ``temperature=``,
    ``vllm_gpu_memory_utilization=`` ...) are still accepted by the constructors and readable as attributes; they
    map onto ``judge`` (``LEGACY_JUDGE_KEYS``).

    Example:
        >>> from trl_grrm.rewards import GroupRelativeRewardConfig
        >>> config = GroupRelativeRewardConfig(judge={"model": "grrm", "base_url": "http://judge:8000/v1"})
        >>> config.judge.backend, config.engine_config().gpu_memory_utilization
        ('openai', 0.3)
    """

    #: ``judge`` option names that may also be passed / read flat (the reward configs' spelling before ``judge``).
    _FLAT_JUDGE_NAMES = frozenset(f.name for f in dataclasses.fields(JudgeConfig)) - {"model", "tokenizer", "dtype",
                                                                                        "device", "batch_size"}

    @staticmethod
    def _wrap_init(cls: type) -> type:
        """Let ``cls(...)`` take the old flat judge keywords, moving them into ``judge`` (class decorator)."""
        init = cls.__init__
        own = {f.name for f in dataclasses.fields(cls)}

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            flat = {}
            for key in list(kwargs):
                if key not in own and (key in LEGACY_JUDGE_KEYS or key in JudgeOptions._FLAT_JUDGE_NAMES):
                    flat[LEGACY_JUDGE_KEYS.get(key, key)] = kwargs.pop(key)
            if flat:
                judge = kwargs.get("judge")
                if isinstance(judge, JudgeConfig):
                    kwargs["judge"] = dataclasses.replace(judge, **flat)
                else:
                    kwargs["judge"] = {**dict(judge or {}), **flat}
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        return cls

    def _init_judge(self) -> None:
        """``judge`` as a :class:`JudgeConfig` (from a mapping, a JSON string or ``None``), checked for a reward."""
        self.judge = JudgeConfig.from_value(self.judge)
        if self.judge.backend == "standin":
            raise ValueError("judge.backend 'standin' is only for the grpo-mt script; a reward config needs vllm, "
                             "openai or transformers")
        RetryPolicy(self.judge.max_parse_retries, self.judge.retry_temperature)  # its own range checks

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not fields: the old flat spellings, read from `judge`.
        if name != "judge" and (name in LEGACY_JUDGE_KEYS or name in JudgeOptions._FLAT_JUDGE_NAMES):
            judge = self.__dict__.get("judge")
            if isinstance(judge, JudgeConfig):
                return getattr(judge, LEGACY_JUDGE_KEYS.get(name, name))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def engine_config(self) -> EngineConfig:
        """The judge engine ``judge`` describes (built by :func:`trl_grrm.engines.build_engine`); a vLLM judge takes
        :data:`~trl_grrm.engines.VLLM_MEMORY_SHARE_BESIDE_TRAINING` of the GPU unless ``judge`` says otherwise."""
        return self.judge.engine_config(gpu_memory_utilization=VLLM_MEMORY_SHARE_BESIDE_TRAINING)

    def judge_runner(self, engine: JudgeEngine) -> JudgeRunner:
        """The judging core with this config's sampling, retry policy, prompt limit and unavailable policy."""
        return self.judge.runner(engine)


@dataclass
class _GroupResult:
    """The outcome for one group, shared with every process."""

    index: int
    members: list[int]  # global completion indices
    unique: list[str] = field(default_factory=list)
    member_unique: list[int | None] = field(default_factory=list)  # per member: index into `unique`, None if invalid
    scores: list[Any] | None = None  # per unique candidate
    unjudged_reason: str | None = None
    ranking_agrees: bool | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_retries: int = 0  # transport-level retries the engine spent on this group's requests
    revised_scores: bool = False  # the accepted answer changed its scores after the Scores section
    details: dict[str, Any] = field(default_factory=dict)  # format-specific counts (e.g. bounded GRAM verdicts)


@dataclass
class _Failure:
    """An exception one process hit while judging, shipped to every process in place of its results."""

    rank: int
    kind: str
    message: str
    configuration: bool = False

    def __str__(self) -> str:
        return f"process {self.rank}: {self.kind}: {self.message}"


def _trainer_behind(*callbacks: Any) -> Any | None:
    """The GRPOTrainer whose bound methods TRL passed as ``log_metric`` / ``log_extra``, or ``None``.

    TRL hands every reward function these two callbacks; they are the trainer's own methods, so the trainer (and its
    ``num_generations``, its train/eval mode) is known without walking the call stack.
    """
    try:
        from trl import GRPOTrainer
    except ImportError:  # pragma: no cover - trl is a dependency
        return None
    for callback in callbacks:
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, GRPOTrainer):
            return owner
    return None


def _find_calling_trainer() -> Any | None:
    """The GRPOTrainer (or subclass) whose `_calculate_rewards` is calling us, found on the call stack.

    Only the fallback when ``num_generations`` is not set and TRL passed no trainer callbacks: frame locals are not a
    stable interface across TRL versions.
    """
    try:
        from trl import GRPOTrainer
    except ImportError:  # pragma: no cover - trl is a dependency
        return None
    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, GRPOTrainer):
                return candidate
            frame = frame.f_back
    finally:
        del frame
    return None


def missing_column(columns: dict[str, Any], names: tuple[str, ...], hint: str) -> str | None:
    """A message naming the first of ``names`` that the dataset did not pass (``hint``: the fields that set the
    names), or ``None``."""
    for column in names:
        if column not in columns:
            available = sorted(k for k in columns if k not in ("log_extra",))
            return f"needs the dataset column {column!r} (set by {hint}); the dataset passed the columns {available}."
    return None


def batch_problem(prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None) -> str | None:
    """A message when prompts or completion_ids do not match the completions one for one, or ``None``."""
    count = len(completions)
    if len(prompts) != count:
        return f"got {len(prompts)} prompts but {count} completions"
    if completion_ids is not None and len(completion_ids) != count:
        return f"got {len(completion_ids)} completion_ids for {count} completions"
    return None


def bad_text_value(columns: dict[str, Any], names: tuple[str, ...], count: int) -> str | None:
    """A message naming the row and column of the first value of ``names`` that is not a non-empty string (or a
    column of the wrong length), or ``None``."""
    for column in names:
        values = columns[column]
        if len(values) != count:
            return f"column {column!r} has {len(values)} values for {count} completions"
        for row, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                return (
                    f"row {row} of column {column!r} is {value!r}; expected a non-empty string "
                    "(filter or fill such rows before training)"
                )
    return None


def bad_completion(completions: list[Any]) -> str | None:
    """A message naming the first completion that is neither text nor messages, or ``None``."""
    for row, completion in enumerate(completions):
        if not isinstance(completion, (str, list, dict)):
            return f"completion {row} is a {type(completion).__name__}; expected a string or a list of messages"
    return None


class GroupJudgingReward:
    """Base of the reward functions that judge GRPO completion groups (see the module docstring).

    Subclasses set ``config`` fields ``name``, ``num_generations``, ``judge_on``, ``audit_log_path``,
    ``score_scale``, ``invalid_completion_reward``, ``unjudged_reward``, ``unjudged_overlong_penalty`` and the
    ``overlong_*`` fields, and implement :meth:`_check_inputs`, :meth:`_candidate`, :meth:`judge_groups` and
    :meth:`_audit_record`; each candidate has a ``group_key`` (equal within a group) and ``num_tokens``.
    """

    #: Start of the RuntimeError every process raises when judging failed on some process.
    failure_prefix = "judging failed: "
    #: Completions-table column (``<name>/<this>``) with the text the judge saw of each completion.
    extracted_column = "extracted"

    def __init__(self, config: Any, engine: JudgeEngine | None = None) -> None:
        self.config = config
        self.__name__ = config.name
        self._engine = engine
        self._calls = 0
        self._warned_group_size = False  # the "num_generations is not set" warning is given once

    # -- engine ------------------------------------------------------------------------------------------------

    @property
    def engine(self) -> JudgeEngine:
        """The judge engine, created on first use (so building the reward function is cheap and picklable)."""
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> JudgeEngine:
        return build_engine(self.config.engine_config())

    def __getstate__(self) -> dict[str, Any]:
        # Engines hold processes and sockets; a copy (e.g. for a spawned worker) starts its own.
        state = self.__dict__.copy()
        state["_engine"] = None
        return state

    # -- hooks -------------------------------------------------------------------------------------------------

    def _check_inputs(
        self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None, columns: dict[str, Any]
    ) -> str | None:
        raise NotImplementedError

    def _candidate(
        self, i: int, prompt: Any, completions: list[Any], completion_ids: list[list[int]] | None, columns: dict[str, Any]
    ) -> Any:
        raise NotImplementedError

    def judge_groups(self, groups: list[list[int]], everything: list[Any], group_indices: list[int]) -> list[_GroupResult]:
        raise NotImplementedError

    def _audit_record(self, result: _GroupResult, everything: list[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _extracted(self, candidate: Any) -> str | None:
        """The text of ``candidate`` the judge saw (``None``: nothing usable, an invalid completion)."""
        raise NotImplementedError

    # -- TRL entry point ---------------------------------------------------------------------------------------

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]] | None = None,
        trainer_state: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list[Any]], None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        """One reward per completion, called by TRL with every dataset column as a keyword.

        Through ``log_extra`` each process adds, for its own completions, the columns ``<name>/<extracted_column>``,
        ``<name>/judge_score``, ``<name>/unjudged_reason`` and ``<name>/ranking`` to TRL's completions table (see
        :meth:`completion_columns`).

        Every process raises the same error, never one alone: ``ValueError`` for unusable inputs (a missing column, a
        column whose length differs from the batch, a source or language value that is ``None``, NaN, empty or not a
        string, a completion that is not text), naming the process, row and column;
        :class:`~trl_grrm.engines.JudgeConfigurationError` with the engine's message when the judge cannot answer as
        configured (never a fallback reward); ``RuntimeError`` for anything else.
        """
        c = self.config
        group_size, mode = self._group_size_and_mode(log_metric, log_extra)
        rank, world = distributed.process_index(), distributed.num_processes()
        # A bad row is shared with the completions, so every process raises the same error: one that raised alone
        # would leave the others waiting in the exchange until their connection closes.
        problem = self._check_inputs(prompts, completions, completion_ids, columns)
        local: list[Any] = []
        for i, prompt in enumerate([] if problem else prompts):
            try:
                local.append(self._candidate(i, prompt, completions, completion_ids, columns))
            except (TypeError, AttributeError, KeyError) as error:  # e.g. a message list holding plain strings
                problem = f"completion {i} (or its completion_ids) cannot be read: {type(error).__name__}: {error}"
                local = []
                break
        gathered_inputs = distributed.all_gather_objects((local, problem))
        problems = [f"process {r}: {p}" for r, (_, p) in enumerate(gathered_inputs) if p]
        if problems:
            raise ValueError(f"{type(self).__name__} got unusable inputs: " + "; ".join(problems))
        per_rank = [part for part, _ in gathered_inputs]
        if len({len(part) for part in per_rank}) != 1:
            raise RuntimeError(f"processes hold different numbers of completions: {[len(p) for p in per_rank]}")
        everything = [candidate for part in per_rank for candidate in part]
        groups = self._cut_groups(everything, group_size)

        started = time.perf_counter()
        owner = (lambda g: g % world) if c.judge_on == "all_processes" else (lambda g: 0)
        mine = [g for g in range(len(groups)) if owner(g) == rank]
        local_error: Exception | None = None
        try:
            local_results: Any = self.judge_groups([groups[g] for g in mine], everything, mine)
        except Exception as error:  # surfaced on every rank below, so no rank waits forever in the gather
            local_error = error
            if isinstance(error, JudgeConfigurationError):
                local_results = _Failure(rank, error.__class__.__name__, str(error), configuration=True)
            else:
                logger.exception("Judging failed on process %d", rank)
                local_results = _Failure(rank, error.__class__.__name__, str(error))
        elapsed = time.perf_counter() - started
        gathered = distributed.all_gather_objects((local_results, elapsed))
        failures = [r for r, _ in gathered if isinstance(r, _Failure)]
        if failures:
            self._raise_failures(failures, local_error)
        results = sorted((r for part, _ in gathered for r in part), key=lambda r: r.index)
        latency = max(t for _, t in gathered)

        rewards_global = self._rewards(results, everything)
        self._calls += 1
        step = getattr(trainer_state, "global_step", self._calls)
        stats = self._statistics(results, everything, latency)
        if log_metric is not None:
            for name, value in stats.items():
                log_metric(f"{c.name}/{name}", value)
        if rank == 0 and c.audit_log_path:
            self._write_audit(results, everything, rewards_global, step, mode)
        # Every process holds the same number of completions (checked above), in rank order on the global list.
        offset = rank * len(local)
        if log_extra is not None:
            # TRL gathers each process's extra columns in rank order, as it gathers the completions: each process
            # logs exactly its own slice, so the columns line up with the completions table.
            for column, values in self.completion_columns(results, everything).items():
                log_extra(f"{c.name}/{column}", values[offset : offset + len(local)])
        return rewards_global[offset : offset + len(local)]

    def _raise_failures(self, failures: list[_Failure], local_error: Exception | None) -> None:
        """Raise, on every process, the error judging hit on some: a configuration error as itself, with the engine's
        message unchanged (this process re-raises its own exception object, traceback included)."""
        configuration = [f for f in failures if f.configuration]
        if configuration:
            if isinstance(local_error, JudgeConfigurationError):
                raise local_error
            raise JudgeConfigurationError(configuration[0].message)
        raise RuntimeError(self.failure_prefix + "; ".join(str(f) for f in failures)) from local_error

    # -- grouping ----------------------------------------------------------------------------------------------

    def _group_size_and_mode(self, *callbacks: Any) -> tuple[int, str]:
        """The group size and ``"train"``/``"eval"``: ``num_generations`` (``num_generations_eval`` in evaluation)
        when set, checked against the trainer behind TRL's callbacks; else read from the calling trainer (warned
        once). Raises ``ValueError`` when the set size differs from the trainer's."""
        c = self.config
        trainer = _trainer_behind(*callbacks)
        if trainer is None and c.num_generations is None:
            trainer = _find_calling_trainer()  # the fragile fallback
        mode = "train" if trainer is None or trainer.model.training else "eval"
        if c.num_generations is None:
            if trainer is None:
                raise RuntimeError(
                    f"{type(self).__name__} could not find the GRPOTrainer calling it, so it does not know the "
                    "group size; pass num_generations=... when using it outside GRPOTrainer."
                )
            size = int(trainer.num_generations if mode == "train" else trainer.num_generations_eval)
            if not self._warned_group_size:
                self._warned_group_size = True
                logger.warning(
                    "%s: num_generations is not set, so the group size (%d in %s) was read from the calling "
                    "GRPOTrainer. Set num_generations (and num_generations_eval, if the GRPOConfig sets it) of %s to "
                    "the GRPOConfig's values, e.g. %s(%s=%d, ...).",
                    type(self).__name__, size, mode, type(c).__name__, type(self).__name__,
                    "num_generations" if mode == "train" else "num_generations_eval", size,
                )  # fmt: skip
            return size, mode
        size = c.num_generations if mode == "train" else (c.num_generations_eval or c.num_generations)
        if trainer is not None:
            actual = int(trainer.num_generations if mode == "train" else trainer.num_generations_eval)
            if actual != size:
                field_name = "num_generations" if mode == "train" else "num_generations_eval"
                raise ValueError(
                    f"{type(self).__name__} has {field_name}={size} but the GRPOTrainer samples groups of {actual} "
                    f"in {mode} (GRPOConfig.{field_name}); set {type(c).__name__}.{field_name} to {actual}, or leave "
                    "it None to read it from the trainer."
                )
        return size, mode

    def _cut_groups(self, everything: list[Any], group_size: int) -> list[list[int]]:
        if len(everything) % group_size:
            raise ValueError(
                f"{len(everything)} completions over all processes cannot form groups of {group_size}; "
                "num_generations must divide the global batch"
            )
        groups = [list(range(s, s + group_size)) for s in range(0, len(everything), group_size)]
        for members in groups:
            first = everything[members[0]]
            for index in members[1:]:
                if everything[index].group_key != first.group_key:
                    raise ValueError(
                        f"completions {members[0]} and {index} should belong to one group of {group_size} but have "
                        "different prompts or source columns; is num_generations right?"
                    )
        return groups

    # -- completions table -------------------------------------------------------------------------------------

    def completion_columns(self, results: list[_GroupResult], everything: list[Any]) -> dict[str, list[Any]]:
        """The judge's view of every completion (global order), as the columns this function adds to TRL's
        completions table (each prefixed with ``<name>/``):

        * ``<extracted_column>``: the text the judge saw (the extracted translation or response; ``None`` if none);
        * ``judge_score``: the judge's score of that text (GQM 0-10, pairwise win probability), ``None`` if unjudged;
        * ``unjudged_reason``: ``""`` when judged, ``"invalid_completion"`` when nothing could be extracted, else why
          the group got no scores (``too_few_distinct``, ``parse_failed``, ...);
        * ``ranking``: the group's order by judge score, ``#k`` being its k-th completion in table order, ties as
          ``=``, invalid completions left out (e.g. ``#2 > #1 = #4``); ``""`` for an unjudged group.

        Example:
            >>> from trl_grrm.rewards.base import _GroupResult
            >>> reward = GroupJudgingReward.__new__(GroupJudgingReward)
            >>> reward._extracted = lambda text: text
            >>> result = _GroupResult(0, [0, 1, 2], ["x", "yy"], [0, 1, None], scores=[3, 7])
            >>> reward.completion_columns([result], ["x", "yy", None])["ranking"]
            ['#2 > #1', '#2 > #1', '#2 > #1']
        """
        n = len(everything)
        columns: dict[str, list[Any]] = {
            self.extracted_column: [self._extracted(candidate) for candidate in everything],
            "judge_score": [None] * n,
            "unjudged_reason": [""] * n,
            "ranking": [""] * n,
        }
        for result in results:
            ranked: dict[float, list[str]] = {}
            for position, (index, unique_index) in enumerate(zip(result.members, result.member_unique), start=1):
                if unique_index is None:
                    columns["unjudged_reason"][index] = "invalid_completion"
                elif result.scores is None:
                    columns["unjudged_reason"][index] = result.unjudged_reason or ""
                else:
                    score = float(result.scores[unique_index])
                    columns["judge_score"][index] = score
                    ranked.setdefault(score, []).append(f"#{position}")
            line = " > ".join(" = ".join(ranked[score]) for score in sorted(ranked, reverse=True))
            for index in result.members:
                columns["ranking"][index] = line
        return columns

    @staticmethod
    def _take_attempt_totals(result: _GroupResult, attempt: dict[str, Any]) -> None:
        result.prompt_tokens += attempt["prompt_tokens"]
        result.completion_tokens += attempt["completion_tokens"]
        result.request_retries += attempt.get("request_retries", 0)

    # -- rewards, statistics, audit ----------------------------------------------------------------------------

    def _rewards(self, results: list[_GroupResult], everything: list[Any]) -> list[float | None]:
        c = self.config
        rewards: list[float | None] = [None] * len(everything)
        for result in results:
            for index, unique_index in zip(result.members, result.member_unique):
                if unique_index is None:
                    rewards[index] = c.invalid_completion_reward
                    continue
                penalty = soft_overlong_penalty(
                    everything[index].num_tokens, c.overlong_max_tokens, c.overlong_buffer_tokens, c.overlong_penalty
                )
                if result.scores is not None:
                    rewards[index] = result.scores[unique_index] * c.score_scale - penalty
                elif c.unjudged_reward is None or not c.unjudged_overlong_penalty:
                    rewards[index] = c.unjudged_reward
                else:
                    rewards[index] = c.unjudged_reward - penalty
        return rewards

    def _statistics(self, results: list[_GroupResult], everything: list[Any], latency: float) -> dict[str, float]:
        """The metrics every group-judging reward logs (as ``<name>/<metric>``)."""
        num_groups = len(results)
        counts = attempt_counts([a for r in results for a in r.attempts])
        reasons = Counter(r.unjudged_reason for r in results if r.unjudged_reason)
        invalid = sum(m is None for r in results for m in r.member_unique)
        fallback = invalid + sum(
            sum(m is not None for m in r.member_unique) for r in results if r.scores is None
        )
        stats = {
            "groups": float(num_groups),
            "judge_calls": float(counts["judge_calls"]),
            "retries": float(counts["retries"]),
            "parse_failure_rate": counts["parse_failures"] / counts["answers"] if counts["answers"] else 0.0,
            # among answers with text (cut or not)
            "truncated_rate": counts["truncated_answers"] / counts["received"] if counts["received"] else 0.0,
            "request_retries": float(sum(r.request_retries for r in results)),
            "fallback_completions": float(fallback),
            "invalid_completions": float(invalid),
            "unjudged_groups": float(sum(reasons.values())),
            "distinct_candidates": sum(len(r.unique) for r in results) / num_groups if num_groups else 0.0,
            "judge_latency_s": latency,
            "judge_prompt_tokens": sum(r.prompt_tokens for r in results) / max(1, counts["judge_calls"]),
            "judge_output_tokens": sum(r.completion_tokens for r in results) / max(1, counts["judge_calls"]),
        }
        for reason in UNJUDGED_REASONS:
            stats[f"unjudged/{reason}"] = float(reasons.get(reason, 0))
        for reason, legacy in _LEGACY_REASON_METRICS.items():
            stats[f"unjudged/{legacy}"] = stats[f"unjudged/{reason}"]
        return stats

    def _write_audit(
        self, results: list[_GroupResult], everything: list[Any], rewards: list[float | None], step: int, mode: str
    ) -> None:
        path = self.config.audit_log_path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            for result in results:
                record = {"step": step, "mode": mode, "group": result.index, **self._audit_record(result, everything)}
                record["rewards"] = [rewards[i] for i in result.members]
                record["attempts"] = result.attempts
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

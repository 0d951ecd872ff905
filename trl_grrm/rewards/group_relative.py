"""GroupRelativeRewardFunction: judge each GRPO completion group jointly with a GRRM judge, inside plain TRL."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .. import distributed
from ..engines import (
    VLLM_MEMORY_SHARE_BESIDE_TRAINING,
    EngineConfig,
    JudgeConfigurationError,
    JudgeEngine,
    SamplingSettings,
    build_engine,
)
from ..formats.gqm import CANDIDATE_IDS
from ..formats.mt import completion_text, get_extractor
from ..judging import GQMJudge, JudgeGroup, JudgeRunner, JudgeTask, RetryPolicy, attempt_counts, distinct_candidates
from ..judging.failures import PARSE_FAILED, PROMPT_TOO_LONG, TOO_FEW_DISTINCT, TRUNCATED, UNAVAILABLE
from ..ranking import tie_rate
from .penalties import soft_overlong_penalty

logger = logging.getLogger(__name__)

# Why a group got no judge scores (see trl_grrm.judging.failures). Each has its own counter in the logs.
UNJUDGED_REASONS = (TOO_FEW_DISTINCT, PROMPT_TOO_LONG, PARSE_FAILED, TRUNCATED, UNAVAILABLE)
# Metric names kept for dashboards made before the vocabulary was shared with the evaluation commands.
_LEGACY_REASON_METRICS = {UNAVAILABLE: "judge_unavailable"}


@dataclass
class GroupRelativeRewardConfig:
    """Every knob of :class:`GroupRelativeRewardFunction`. ``GroupRelativeRewardConfig.grrm_paper()`` gives the
    settings of the GRRM paper's MT GRPO runs.

    Reward of a completion whose group was judged: ``score * score_scale - soft_overlong_penalty(tokens)``.
    A completion with no extractable translation gets ``invalid_completion_reward``; the valid completions of a
    group that could not be judged get ``unjudged_reward``. Either may be ``None``: TRL then treats the completion as
    unscored (NaN reward, zero advantage).
    """

    judge_model: str = field(metadata={"help": "Judge model: a hub id or local path (vllm/transformers), or the served model name (openai)."})
    backend: Literal["vllm", "openai", "transformers"] = field(default="vllm", metadata={"help": "Judge engine."})

    # openai backend
    base_url: str | list[str] | None = field(default=None, metadata={"help": "OpenAI-compatible base URL(s), e.g. http://host:8000/v1; requests are spread over several."})
    api_key_env: str = field(default="JUDGE_API_KEY", metadata={"help": "Environment variable holding the API key (never logged). Unset: 'EMPTY'."})
    max_concurrency: int = field(default=64, metadata={"help": "Concurrent requests per process."})
    request_timeout: float = field(default=600.0, metadata={"help": "Hard deadline in seconds for each request attempt (the whole reply, not each read)."})
    max_request_retries: int = field(default=3, metadata={"help": "Retries (exponential backoff, next URL) for failed requests."})
    request_backoff_seconds: float = field(default=1.0, metadata={"help": "First retry delay; doubles on each retry."})
    judge_tokenizer: str | None = field(default=None, metadata={"help": "openai backend: a tokenizer (path or id) to count judge prompt tokens locally, so over-long prompts are never sent. None: the server's 400 for over-long prompts is used."})

    # vllm backend
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "vllm backend: GPUs per judge engine."})
    vllm_gpu_memory_utilization: float = field(default=VLLM_MEMORY_SHARE_BESIDE_TRAINING, metadata={"help": "vllm backend: share of GPU memory for the judge (weights + KV cache), which shares the GPU with the policy."})
    vllm_max_model_len: int | None = field(default=None, metadata={"help": "vllm backend: judge context length (None: the model's)."})
    vllm_dtype: str = field(default="auto", metadata={"help": "vllm backend: weight dtype."})
    vllm_enforce_eager: bool = field(default=False, metadata={"help": "vllm backend: disable CUDA graphs (less memory, slower)."})
    vllm_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "Extra vllm.LLM arguments."})

    # transformers backend
    transformers_batch_size: int = field(default=8, metadata={"help": "transformers backend: prompts per generate call."})
    transformers_device: str | None = field(default=None, metadata={"help": "transformers backend: device (None: cuda if available, else cpu)."})

    # judge sampling
    temperature: float = field(default=0.0, metadata={"help": "Judge temperature for the first attempt (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Judge nucleus sampling."})
    max_judge_tokens: int = field(default=4096, metadata={"help": "Max tokens of a judge answer."})
    max_judge_prompt_tokens: int | None = field(default=None, metadata={"help": "Groups whose judge prompt is longer get the fallback. None: the engine's own limit."})
    max_parse_retries: int = field(default=2, metadata={"help": "Re-asks for judge answers that do not parse or were cut at max_judge_tokens (0-10)."})
    retry_temperature: float = field(default=1.0, metadata={"help": "Temperature of those re-asks (never below `temperature`; see trl_grrm.judging.RetryPolicy)."})
    seed: int | None = field(default=0, metadata={"help": "Judge sampling seed (re-ask k uses seed + 1_000_003 * k) and seed of shuffle_candidates."})

    # rewards
    score_scale: float = field(default=0.1, metadata={"help": "Reward per judge score point (scores are 0-10)."})
    invalid_completion_reward: float | None = field(default=0.0, metadata={"help": "Reward for a completion with no extractable translation (None: unscored)."})
    unjudged_reward: float | None = field(default=None, metadata={"help": "Reward for valid completions of a group that could not be judged (None: unscored)."})
    unjudged_overlong_penalty: bool = field(default=False, metadata={"help": "Also subtract the soft overlong penalty from unjudged_reward, so that in groups the judge could not score a short valid completion still beats an over-long one (the official GRRM code does this)."})
    overlong_max_tokens: int | None = field(default=None, metadata={"help": "Soft overlong penalty: full penalty at this completion length (None: off)."})
    overlong_buffer_tokens: int = field(default=0, metadata={"help": "Soft overlong penalty ramps up over this many tokens before overlong_max_tokens."})
    overlong_penalty: float = field(default=0.0, metadata={"help": "Largest overlong penalty subtracted from the reward."})

    # inputs
    extractor: str = field(default="codeblock", metadata={"help": "How to pull the translation out of a completion: codeblock, codeblock_strict, last_line or full."})
    source_column: str = field(default="src_text", metadata={"help": "Dataset column with the source text."})
    source_language_column: str = field(default="src_lang", metadata={"help": "Dataset column with the source language (code or name)."})
    target_language_column: str = field(default="trg_lang", metadata={"help": "Dataset column with the target language (code or name)."})
    language_names: dict[str, str] = field(default_factory=dict, metadata={"help": "Extra language code -> English name entries."})
    shuffle_candidates: bool = field(default=False, metadata={"help": "Present candidates to the judge in a seeded random order (position-bias control)."})

    # grouping and distribution
    num_generations: int | None = field(default=None, metadata={"help": "Group size. None: read from the GRPOTrainer calling the function (num_generations / num_generations_eval)."})
    judge_on: Literal["all_processes", "main_process"] = field(default="all_processes", metadata={"help": "Spread groups over all processes' engines, or judge everything on rank 0."})

    # failure policy and logging
    ranking_mismatch: Literal["count", "fail"] = field(default="count", metadata={"help": "A ranking line that disagrees with the scores: only counted, or treated as a parse failure."})
    on_judge_unavailable: Literal["fallback", "raise"] = field(default="fallback", metadata={"help": "When the engine cannot answer (server down after retries)."})
    audit_log_path: str | None = field(default=None, metadata={"help": "Append every judge request/response to this JSONL file (rank 0, flushed every step)."})
    name: str = field(default="grrm_judge", metadata={"help": "Reward function name in TRL's logs."})

    def __post_init__(self) -> None:
        get_extractor(self.extractor)
        if self.backend not in ("vllm", "openai", "transformers"):
            raise ValueError(f"backend must be 'vllm', 'openai' or 'transformers', got {self.backend!r}")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend='openai' needs base_url (e.g. 'http://judge-host:8000/v1')")
        if self.ranking_mismatch not in ("count", "fail"):
            raise ValueError(f"ranking_mismatch must be 'count' or 'fail', got {self.ranking_mismatch!r}")
        if self.on_judge_unavailable not in ("fallback", "raise"):
            raise ValueError(f"on_judge_unavailable must be 'fallback' or 'raise', got {self.on_judge_unavailable!r}")
        if self.judge_on not in ("all_processes", "main_process"):
            raise ValueError(f"judge_on must be 'all_processes' or 'main_process', got {self.judge_on!r}")
        if self.num_generations is not None and not 2 <= self.num_generations:
            raise ValueError(f"num_generations must be at least 2, got {self.num_generations}")
        if self.max_parse_retries < 0:
            raise ValueError("max_parse_retries must be >= 0")
        RetryPolicy(self.max_parse_retries, self.retry_temperature)  # its own range checks, with their messages

    def engine_config(self) -> EngineConfig:
        """The judge engine these fields describe (built by :func:`trl_grrm.engines.build_engine`)."""
        return EngineConfig(
            model=self.judge_model,
            backend=self.backend,
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            max_concurrency=self.max_concurrency,
            request_timeout=self.request_timeout,
            max_request_retries=self.max_request_retries,
            request_backoff_seconds=self.request_backoff_seconds,
            tokenizer=self.judge_tokenizer,
            tensor_parallel_size=self.vllm_tensor_parallel_size,
            gpu_memory_utilization=self.vllm_gpu_memory_utilization,
            max_model_len=self.vllm_max_model_len,
            dtype=self.vllm_dtype if self.backend == "vllm" else "auto",
            enforce_eager=self.vllm_enforce_eager,
            seed=self.seed or 0,
            vllm_kwargs=self.vllm_kwargs,
            batch_size=self.transformers_batch_size,
            device=self.transformers_device,
        )

    def judge_format(self) -> GQMJudge:
        """The GQM judge format these fields describe."""
        return GQMJudge(ranking_mismatch=self.ranking_mismatch, language_names=self.language_names)

    def judge_runner(self, engine: JudgeEngine) -> JudgeRunner:
        """The judging core with this config's sampling, retry policy, prompt limit and unavailable policy."""
        sampling = SamplingSettings(
            temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_judge_tokens, seed=self.seed
        )
        return JudgeRunner(
            engine,
            RetryPolicy(max_retries=self.max_parse_retries, retry_temperature=self.retry_temperature),
            sampling,
            max_prompt_tokens=self.max_judge_prompt_tokens,
            on_unavailable=self.on_judge_unavailable,
        )

    @classmethod
    def grrm_paper(cls, judge_model: str = "double7/Qwen2.5-7B-GRRM", **overrides: Any) -> GroupRelativeRewardConfig:
        """The GRRM paper's MT GRPO reward settings (scores x 0.01, -0.04 for invalid completions, overlong buffer
        2048 of 4096 tokens with penalty 0.04, greedy judge, 2048-token judge prompts, the strict single-code-block
        extractor), plus bounded retries, which the paper lacked.

        Valid completions of a group the judge could not score get what the official code gives them when the judge
        answer does not parse: -0.04 x 0.01 = -0.0004 minus their overlong penalty, so such a group still ranks
        valid above invalid and short above over-long. The official code gives everyone -0.04 (zero advantage)
        when the group has fewer than two distinct valid translations or its judge prompt is too long; here those
        groups get the same fallback as a parse failure (docs/reproduction.md).

        Example:
            >>> GroupRelativeRewardConfig.grrm_paper(backend="openai", base_url="http://judge:8000/v1").score_scale
            0.01
        """
        paper = dict(
            judge_model=judge_model,
            score_scale=0.01,
            invalid_completion_reward=-0.04,
            unjudged_reward=-0.04 * 0.01,
            unjudged_overlong_penalty=True,
            overlong_max_tokens=4096,
            overlong_buffer_tokens=2048,
            overlong_penalty=0.04,
            temperature=0.0,
            max_judge_prompt_tokens=2048,
            max_judge_tokens=8192,
            extractor="codeblock_strict",
        )
        return cls(**{**paper, **overrides})


@dataclass
class _Candidate:
    """One completion on the global (all-process) list."""

    prompt_key: str
    source: str
    source_language: str
    target_language: str
    translation: str | None
    num_tokens: int


@dataclass
class _GroupResult:
    """The outcome for one group, shared with every process."""

    index: int
    members: list[int]  # global completion indices
    unique: list[str] = field(default_factory=list)
    member_unique: list[int | None] = field(default_factory=list)  # per member: index into `unique`, None if invalid
    scores: list[int] | None = None  # per unique candidate
    unjudged_reason: str | None = None
    ranking_agrees: bool | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_retries: int = 0  # transport-level retries the engine spent on this group's requests
    revised_scores: bool = False  # the accepted answer changed its scores after the Scores section


@dataclass
class _Failure:
    """An exception one process hit while judging, shipped to every process in place of its results."""

    rank: int
    kind: str
    message: str
    configuration: bool = False

    def __str__(self) -> str:
        return f"process {self.rank}: {self.kind}: {self.message}"


def _find_calling_trainer() -> Any | None:
    """The GRPOTrainer (or subclass) whose `_calculate_rewards` is calling us, found on the call stack."""
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


class GroupRelativeRewardFunction:
    """A TRL reward function that judges every completion group jointly with a GRRM (GQM) judge.

    Pass it to an unmodified ``trl.GRPOTrainer(reward_funcs=[...])``. On every step it gathers the completions of
    all processes, cuts them into the groups TRL sampled (``num_generations`` each, read from the trainer), judges
    each group once with one prompt listing the group's distinct translations, spreads the groups over the
    processes' engines in one batched call each, and hands every process the rewards of its own completions.

    Example:
        >>> judge = GroupRelativeRewardFunction(
        ...     judge_model="double7/Qwen2.5-7B-GRRM", backend="openai", base_url="http://judge-host:8000/v1"
        ... )  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=..., reward_funcs=[judge], args=GRPOConfig(num_generations=4), ...)  # doctest: +SKIP
    """

    def __init__(
        self,
        config: GroupRelativeRewardConfig | None = None,
        engine: JudgeEngine | None = None,
        **config_fields: Any,
    ) -> None:
        if config is None:
            config = GroupRelativeRewardConfig(**config_fields)
        elif config_fields:
            config = dataclasses.replace(config, **config_fields)
        self.config = config
        self.__name__ = config.name
        self._engine = engine
        self._extract: Callable[[str], str | None] = get_extractor(config.extractor)
        self._judge = config.judge_format()
        self._calls = 0

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

    # -- TRL entry point ---------------------------------------------------------------------------------------

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]] | None = None,
        trainer_state: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        """One reward per completion, called by TRL with every dataset column as a keyword.

        Every process raises the same error, never one alone: ``ValueError`` for unusable inputs (a missing column, a
        column whose length differs from the batch, a source or language value that is ``None``, NaN, empty or not a
        string, a completion that is not text), naming the process, row and column;
        :class:`~trl_grrm.engines.JudgeConfigurationError` with the engine's message when the judge cannot answer as
        configured (never a fallback reward); ``RuntimeError("GRRM judging failed: ...")`` for anything else.
        """
        c = self.config
        group_size, mode = self._group_size_and_mode()
        rank, world = distributed.process_index(), distributed.num_processes()
        # A bad row is shared with the completions, so every process raises the same error: one that raised alone
        # would leave the others waiting in the exchange until their connection closes.
        problem = self._check_inputs(prompts, completions, completion_ids, columns)
        local: list[_Candidate] = []
        for i, prompt in enumerate([] if problem else prompts):
            try:
                local.append(_Candidate(
                    prompt_key=prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str),
                    source=columns[c.source_column][i],
                    source_language=columns[c.source_language_column][i],
                    target_language=columns[c.target_language_column][i],
                    translation=self._extract(completion_text(completions[i])),
                    num_tokens=len(completion_ids[i]) if completion_ids is not None else 0,
                ))  # fmt: skip
            except (TypeError, AttributeError, KeyError) as error:  # e.g. a message list holding plain strings
                problem = f"completion {i} (or its completion_ids) cannot be read: {type(error).__name__}: {error}"
                local = []
                break
        gathered_inputs = distributed.all_gather_objects((local, problem))
        problems = [f"process {r}: {p}" for r, (_, p) in enumerate(gathered_inputs) if p]
        if problems:
            raise ValueError("GroupRelativeRewardFunction got unusable inputs: " + "; ".join(problems))
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
        offset = rank * len(local)
        return rewards_global[offset : offset + len(local)]

    def _check_inputs(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]] | None,
        columns: dict[str, Any],
    ) -> str | None:
        """The first problem with this process's inputs, as a message naming the row and column, or ``None``."""
        c = self.config
        count = len(completions)
        for column in (c.source_column, c.source_language_column, c.target_language_column):
            if column not in columns:
                available = sorted(k for k in columns if k not in ("log_extra",))
                return (
                    f"needs the dataset column {column!r} (set by "
                    f"`source_column`/`source_language_column`/`target_language_column`); the dataset passed the "
                    f"columns {available}."
                )
        if len(prompts) != count:
            return f"got {len(prompts)} prompts but {count} completions"
        if completion_ids is not None and len(completion_ids) != count:
            return f"got {len(completion_ids)} completion_ids for {count} completions"
        for column in (c.source_column, c.source_language_column, c.target_language_column):
            values = columns[column]
            if len(values) != count:
                return f"column {column!r} has {len(values)} values for {count} completions"
            for row, value in enumerate(values):
                if not isinstance(value, str) or not value.strip():
                    return (
                        f"row {row} of column {column!r} is {value!r}; expected a non-empty string "
                        "(filter or fill such rows before training)"
                    )
        for row, completion in enumerate(completions):
            if not isinstance(completion, (str, list, dict)):
                return (
                    f"completion {row} is a {type(completion).__name__}; expected a string or a list of messages"
                )
        return None

    @staticmethod
    def _raise_failures(failures: list[_Failure], local_error: Exception | None) -> None:
        """Raise, on every process, the error judging hit on some: a configuration error as itself, with the engine's
        message unchanged (this process re-raises its own exception object, traceback included)."""
        configuration = [f for f in failures if f.configuration]
        if configuration:
            if isinstance(local_error, JudgeConfigurationError):
                raise local_error
            raise JudgeConfigurationError(configuration[0].message)
        raise RuntimeError("GRRM judging failed: " + "; ".join(str(f) for f in failures)) from local_error

    # -- grouping ----------------------------------------------------------------------------------------------

    def _group_size_and_mode(self) -> tuple[int, str]:
        trainer = _find_calling_trainer()
        mode = "train"
        if trainer is not None:
            mode = "train" if trainer.model.training else "eval"
        if self.config.num_generations is not None:
            return self.config.num_generations, mode
        if trainer is None:
            raise RuntimeError(
                "GroupRelativeRewardFunction could not find the GRPOTrainer calling it, so it does not know the "
                "group size; pass num_generations=... when using it outside GRPOTrainer."
            )
        size = trainer.num_generations if mode == "train" else trainer.num_generations_eval
        return int(size), mode

    def _cut_groups(self, everything: list[_Candidate], group_size: int) -> list[list[int]]:
        if len(everything) % group_size:
            raise ValueError(
                f"{len(everything)} completions over all processes cannot form groups of {group_size}; "
                "num_generations must divide the global batch"
            )
        groups = [list(range(s, s + group_size)) for s in range(0, len(everything), group_size)]
        for members in groups:
            first = everything[members[0]]
            for index in members[1:]:
                other = everything[index]
                if (other.prompt_key, other.source, other.source_language, other.target_language) != (
                    first.prompt_key, first.source, first.source_language, first.target_language
                ):
                    raise ValueError(
                        f"completions {members[0]} and {index} should belong to one group of {group_size} but have "
                        "different prompts or source columns; is num_generations right?"
                    )
        return groups

    # -- judging -----------------------------------------------------------------------------------------------

    def judge_groups(
        self, groups: list[list[int]], everything: list[_Candidate], group_indices: list[int]
    ) -> list[_GroupResult]:
        """Judge the given groups through the judging core (:class:`~trl_grrm.judging.JudgeRunner`): one batched
        engine call, plus one per retry round."""
        c = self.config
        results: list[_GroupResult] = []
        tasks: list[tuple[_GroupResult, JudgeTask]] = []
        for group_index, members in zip(group_indices, groups):
            result = _GroupResult(index=group_index, members=members)
            result.unique, result.member_unique = distinct_candidates([everything[i].translation for i in members])
            results.append(result)
            if len(result.unique) < 2:
                result.unjudged_reason = TOO_FEW_DISTINCT
                continue
            if len(result.unique) > self._judge.max_candidates:
                raise ValueError(
                    f"a group has {len(result.unique)} distinct candidates; the judge format allows "
                    f"{self._judge.max_candidates}"
                )
            order = list(range(len(result.unique)))
            if c.shuffle_candidates:
                random.Random(f"{c.seed}-{self._calls}-{group_index}").shuffle(order)
            first = everything[members[0]]
            group = JudgeGroup(first.source, result.unique, first.source_language, first.target_language)
            tasks.append((result, JudgeTask(group, order)))
        if tasks:
            self.config.judge_runner(self.engine).run(self._judge, [task for _, task in tasks])
        for result, task in tasks:
            self._take_outcome(result, task)
        return results

    @staticmethod
    def _take_outcome(result: _GroupResult, task: JudgeTask) -> None:
        """Copy what the core found for one group into the result every process receives, with the audit records
        in this function's schema (the request, the scores by candidate letter)."""
        [request] = task.requests  # GQM: one prompt per group
        ids = CANDIDATE_IDS[: len(task.order)]
        for attempt in request.attempts:
            record = {"attempt": attempt["attempt"], "request": request.messages}
            record.update((k, v) for k, v in attempt.items() if k not in ("attempt", "parsed"))
            parsed = attempt.get("parsed")
            if parsed is not None:
                record["scores"] = dict(zip(ids, parsed["scores"]))
                if parsed["revised_scores"]:
                    record["revised_scores"] = True
            result.attempts.append(record)
            result.prompt_tokens += attempt["prompt_tokens"]
            result.completion_tokens += attempt["completion_tokens"]
            result.request_retries += attempt.get("request_retries", 0)
        if task.scores is None:
            result.unjudged_reason = task.failure
            return
        result.scores = [int(score) for score in task.scores]
        result.ranking_agrees = request.parsed["ranking_agrees"]
        result.revised_scores = request.parsed["revised_scores"]

    # -- rewards, statistics, audit ----------------------------------------------------------------------------

    def _rewards(self, results: list[_GroupResult], everything: list[_Candidate]) -> list[float | None]:
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

    def _statistics(self, results: list[_GroupResult], everything: list[_Candidate], latency: float) -> dict[str, float]:
        num_groups = len(results)
        counts = attempt_counts([a for r in results for a in r.attempts])
        judged = [r for r in results if r.scores is not None]
        reasons = Counter(r.unjudged_reason for r in results if r.unjudged_reason)
        invalid = sum(m is None for r in results for m in r.member_unique)
        fallback = invalid + sum(
            sum(m is not None for m in r.member_unique) for r in results if r.scores is None
        )
        with_ranking = [r for r in judged if r.ranking_agrees is not None]
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
            "ranking_disagreement_rate": (
                sum(not r.ranking_agrees for r in with_ranking) / len(with_ranking) if with_ranking else 0.0
            ),
            "ranking_missing_rate": (len(judged) - len(with_ranking)) / len(judged) if judged else 0.0,
            "revised_scores_rate": sum(r.revised_scores for r in judged) / len(judged) if judged else 0.0,
            "tie_rate": (
                sum(tie_rate(dict(enumerate(r.scores))) for r in judged) / len(judged) if judged else 0.0
            ),
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
        self, results: list[_GroupResult], everything: list[_Candidate], rewards: list[float | None], step: int, mode: str
    ) -> None:
        path = self.config.audit_log_path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            for result in results:
                first = everything[result.members[0]]
                record = {
                    "step": step,
                    "mode": mode,
                    "group": result.index,
                    "source": first.source,
                    "source_language": first.source_language,
                    "target_language": first.target_language,
                    "candidates": result.unique,
                    "completion_indices": result.members,
                    "completion_candidate": result.member_unique,
                    "scores": result.scores,
                    "unjudged_reason": result.unjudged_reason,
                    "ranking_agrees": result.ranking_agrees,
                    "rewards": [rewards[i] for i in result.members],
                    "attempts": result.attempts,
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

"""PairwiseRewardFunction: reward GRPO completions of general chat prompts with a pairwise judge (GRAM, GRAM-R²)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..engines import JudgeConfig, JudgeEngine
from ..formats.mt import completion_text, get_extractor
from ..judging import (
    PAIRWISE_SCHEMES,
    GRAMJudge,
    GRAMR2Judge,
    JudgeGroup,
    JudgeTask,
    distinct_candidates,
)
from ..judging.failures import TOO_FEW_DISTINCT
from .base import GroupJudgingReward, JudgeOptions, _GroupResult, bad_completion, bad_text_value, batch_problem, missing_column

logger = logging.getLogger(__name__)


@JudgeOptions._wrap_init
@dataclass
class PairwiseRewardConfig(JudgeOptions):
    """Every knob of :class:`PairwiseRewardFunction`.

    Each completion gets a score in [0, 1], its probability of beating another completion of its group (see
    ``pairwise_scheme``), and the reward ``score * score_scale - soft_overlong_penalty(tokens)``: with the default
    ``score_scale=1.0`` a completion that beats every other one gets 1, one that loses to all gets 0, and a group
    of equals gets 0.5 each. An empty completion gets ``invalid_completion_reward``; the non-empty completions of a
    group that could not be judged get ``unjudged_reward`` (``None``: unscored, zero advantage in TRL).

    Judge calls per group of ``n`` distinct completions, both orders: ``round_robin`` ``n (n - 1)``,
    ``bradley_terry`` about ``2 n log2 n`` (``2 * round(n log2 n)``, at most ``n (n - 1)``), ``reference``
    ``2 n`` against a ``reference_column`` or ``2 (n - 1)`` against a group member; GRAM-R² multiplies by
    ``judge_samples``. Half as many with ``both_orders=False``.
    """

    judge: JudgeConfig | dict | str | None = field(default=None, metadata={"help": "The judge: engine, sampling and retries (trl_grrm.engines.JudgeConfig, or a mapping of its fields; a YAML `judge:` block). The old flat keywords (judge_model=, backend=, temperature= ...) are still accepted."})
    judge_type: Literal["gram", "gram_r2"] = field(default="gram", metadata={"help": "gram: verdict from the next-token probabilities of 'A' and 'B' (one token per call); gram_r2: a reasoning judge whose <answer> is parsed (voting over judge_samples)."})
    pairwise_scheme: Literal["round_robin", "bradley_terry", "reference"] = field(default="round_robin", metadata={"help": "Which pairs are judged: round_robin (all pairs, mean win probability), bradley_terry (a connected graph of ~n log2 n pairs, Bradley-Terry fit), reference (each completion against a reference)."})
    both_orders: bool = field(default=True, metadata={"help": "Judge every pair in both orders and average them (cancels position bias, doubles the calls)."})
    reference_column: str | None = field(default=None, metadata={"help": "reference scheme: dataset column holding the reference response. None: the group's first distinct non-empty completion is the reference (it scores 0.5)."})
    bradley_terry_prior: float | None = field(default=None, metadata={"help": "bradley_terry scheme: Gaussian prior precision on log-strengths (None: trl_grrm.comparisons.DEFAULT_PRIOR), keeps ties and perfect separation finite."})
    judge_samples: int = field(default=1, metadata={"help": "gram_r2: samples per prompt for voting@k (use temperature > 0 and seed None so they differ)."})
    extractor: str = field(default="full", metadata={"help": "What of a completion the judge compares: full (the whole text), or an MT extractor (codeblock, codeblock_strict, last_line); a completion with nothing extracted gets invalid_completion_reward."})
    verdict_top_k: int = field(default=20, metadata={"help": "gram: how many top log-probabilities to ask the engine for; a verdict token outside them is bounded by the smallest one returned (counted as bounded_verdicts)."})

    # rewards
    score_scale: float = field(default=1.0, metadata={"help": "Reward per unit of win probability (scores are in [0, 1])."})
    invalid_completion_reward: float | None = field(default=0.0, metadata={"help": "Reward for an empty completion (None: unscored)."})
    unjudged_reward: float | None = field(default=None, metadata={"help": "Reward for non-empty completions of a group that could not be judged (None: unscored)."})
    unjudged_overlong_penalty: bool = field(default=False, metadata={"help": "Also subtract the soft overlong penalty from unjudged_reward."})
    overlong_max_tokens: int | None = field(default=None, metadata={"help": "Soft overlong penalty: full penalty at this completion length (None: off)."})
    overlong_buffer_tokens: int = field(default=0, metadata={"help": "Soft overlong penalty ramps up over this many tokens before overlong_max_tokens."})
    overlong_penalty: float = field(default=0.0, metadata={"help": "Largest overlong penalty subtracted from the reward."})

    # grouping, failures, logging
    num_generations: int | None = field(default=None, metadata={"help": "Group size: set it to GRPOConfig.num_generations (checked against the trainer). None: read from the GRPOTrainer calling the function, with a warning."})
    num_generations_eval: int | None = field(default=None, metadata={"help": "Group size in evaluation, as GRPOConfig.num_generations_eval (None: num_generations)."})
    judge_on: Literal["all_processes", "main_process"] = field(default="all_processes", metadata={"help": "Spread groups over all processes' engines, or judge everything on rank 0."})
    audit_log_path: str | None = field(default=None, metadata={"help": "Append every judge request/response to this JSONL file (rank 0)."})
    name: str = field(default="pairwise_judge", metadata={"help": "Reward function name in TRL's logs."})

    def __post_init__(self) -> None:
        self._init_judge()
        get_extractor(self.extractor)
        if self.judge_type not in ("gram", "gram_r2"):
            raise ValueError(f"judge_type must be 'gram' or 'gram_r2', got {self.judge_type!r}")
        if self.pairwise_scheme not in PAIRWISE_SCHEMES:
            raise ValueError(f"pairwise_scheme must be one of {PAIRWISE_SCHEMES}, got {self.pairwise_scheme!r}")
        if self.judge_samples < 1:
            raise ValueError(f"judge_samples must be >= 1, got {self.judge_samples}")
        if self.judge_samples > 1 and self.judge_type != "gram_r2":
            raise ValueError("judge_samples > 1 only applies to judge_type='gram_r2' (gram's verdict is deterministic)")
        if self.verdict_top_k < 2:
            raise ValueError(f"verdict_top_k must be >= 2, got {self.verdict_top_k}")
        if self.reference_column is not None and self.pairwise_scheme != "reference":
            raise ValueError("reference_column is only used by pairwise_scheme='reference'")
        if self.judge_on not in ("all_processes", "main_process"):
            raise ValueError(f"judge_on must be 'all_processes' or 'main_process', got {self.judge_on!r}")
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(f"num_generations must be at least 2, got {self.num_generations}")
        if self.num_generations_eval is not None and self.num_generations_eval < 1:
            raise ValueError(f"num_generations_eval must be at least 1, got {self.num_generations_eval}")
        if self.bradley_terry_prior is not None and not (self.bradley_terry_prior > 0 and math.isfinite(self.bradley_terry_prior)):
            raise ValueError(f"bradley_terry_prior must be a positive number, got {self.bradley_terry_prior}")

    def judge_format(self) -> GRAMJudge | GRAMR2Judge:
        """The pairwise judge format these fields describe."""
        common = dict(
            scheme=self.pairwise_scheme, both_orders=self.both_orders, seed=self.judge.seed or 0,
            prior=self.bradley_terry_prior,
        )  # fmt: skip
        if self.judge_type == "gram_r2":
            return GRAMR2Judge(**common, samples=self.judge_samples)
        judge = GRAMJudge(**common)
        judge.verdict_top_k = self.verdict_top_k
        return judge


def prompt_question(prompt: Any) -> str:
    """The question a pairwise judge sees: the prompt text, or the last user message of a conversational prompt.

    Example:
        >>> prompt_question([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}])
        '2+2?'
    """
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    if not users:
        raise KeyError("the prompt has no user message")
    content = users[-1].get("content") or ""
    if not isinstance(content, str):  # a list of content blocks
        content = "\n".join(block.get("text", "") for block in content if block.get("type") == "text")
    return content


@dataclass
class _Candidate:
    """One completion on the global (all-process) list."""

    prompt_key: str
    question: str
    reference: str | None
    response: str | None  # None: empty completion
    num_tokens: int

    @property
    def group_key(self) -> tuple[str, str | None]:
        return (self.prompt_key, self.reference)


class PairwiseRewardFunction(GroupJudgingReward):
    """A TRL reward function that judges pairs of completions of each GRPO group with a pairwise judge (GRAM,
    GRAM-R²) and turns the pair outcomes into one win probability per completion (see
    :class:`PairwiseRewardConfig` for the schemes, their judge calls and the reward scale).

    For chat data: the question is the prompt (a string, or the last user message), the response is the completion
    text. Groups are gathered over processes, judged once, spread over the processes' engines, and logged exactly
    like :class:`~trl_grrm.rewards.GroupRelativeRewardFunction` (same fallbacks, metrics and audit records), plus
    ``<name>/judge_calls_per_group`` and ``<name>/bounded_verdicts`` (GRAM verdicts with a token outside the top-k).

    Example:
        >>> reward = PairwiseRewardFunction(
        ...     judge_model="NiuTrans/GRAM-Qwen3-8B-RewardModel", backend="openai", base_url="http://judge:8000/v1",
        ...     pairwise_scheme="bradley_terry", num_generations=8,
        ... )  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=..., reward_funcs=[reward], args=GRPOConfig(num_generations=8), ...)  # doctest: +SKIP
    """

    failure_prefix = "pairwise judging failed: "
    extracted_column = "response"

    def __init__(
        self, config: PairwiseRewardConfig | None = None, engine: JudgeEngine | None = None, **config_fields: Any
    ) -> None:
        if config is None:
            config = PairwiseRewardConfig(**config_fields)
        elif config_fields:
            config = dataclasses.replace(config, **config_fields)
        super().__init__(config, engine)
        self._extract: Callable[[str], str | None] = get_extractor(config.extractor)
        self._judge = config.judge_format()

    # -- inputs ------------------------------------------------------------------------------------------------

    def _check_inputs(
        self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]] | None, columns: dict[str, Any]
    ) -> str | None:
        """The first problem with this process's inputs, as a message naming the row and column, or ``None``."""
        names = (self.config.reference_column,) if self.config.reference_column else ()
        problem = (
            missing_column(columns, names, "`reference_column`")
            or batch_problem(prompts, completions, completion_ids)
            or bad_text_value(columns, names, len(completions))
            or bad_completion(completions)
        )
        if problem:
            return problem
        for row, prompt in enumerate(prompts):
            if not isinstance(prompt, (str, list)):
                return f"prompt {row} is a {type(prompt).__name__}; expected a string or a list of messages"
            try:
                question = prompt_question(prompt)
            except (KeyError, AttributeError, TypeError) as error:
                return f"prompt {row} cannot be read: {type(error).__name__}: {error}"
            if not question.strip():
                return f"prompt {row} has an empty question (its text or last user message)"
        return None

    def _candidate(
        self, i: int, prompt: Any, completions: list[Any], completion_ids: list[list[int]] | None, columns: dict[str, Any]
    ) -> _Candidate:
        question = prompt_question(prompt)
        response = self._extract(completion_text(completions[i]))
        column = self.config.reference_column
        return _Candidate(
            prompt_key=prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str),
            question=question,
            reference=columns[column][i] if column else None,
            response=response if response and response.strip() else None,
            num_tokens=len(completion_ids[i]) if completion_ids is not None else 0,
        )

    def _extracted(self, candidate: _Candidate) -> str | None:
        return candidate.response

    # -- judging -----------------------------------------------------------------------------------------------

    def judge_groups(
        self, groups: list[list[int]], everything: list[_Candidate], group_indices: list[int]
    ) -> list[_GroupResult]:
        """Judge the given groups through the judging core: every pair of every group in one batched engine call
        (plus one per retry round for GRAM-R²)."""
        results: list[_GroupResult] = []
        tasks: list[tuple[_GroupResult, JudgeTask]] = []
        for group_index, members in zip(group_indices, groups):
            result = _GroupResult(index=group_index, members=members)
            result.unique, result.member_unique = distinct_candidates([everything[i].response for i in members])
            results.append(result)
            first = everything[members[0]]
            # Against a reference text one distinct completion still has something to be compared with.
            if len(result.unique) < (1 if first.reference is not None else 2):
                result.unjudged_reason = TOO_FEW_DISTINCT
                continue
            group = JudgeGroup(first.question, result.unique, reference=first.reference, key=group_index)
            tasks.append((result, JudgeTask(group)))
        if tasks:
            self.config.judge_runner(self.engine).run(self._judge, [task for _, task in tasks])
        for result, task in tasks:
            self._take_outcome(result, task)
        return results

    @staticmethod
    def _take_outcome(result: _GroupResult, task: JudgeTask) -> None:
        for request in task.requests:
            for attempt in request.attempts:
                record = {"attempt": attempt["attempt"], "prompt_index": request.prompt_index, "request": request.messages}
                record.update(attempt)
                result.attempts.append(record)
                GroupJudgingReward._take_attempt_totals(result, attempt)
        result.details["judge_prompts"] = len(task.requests)
        result.details["bounded_verdicts"] = sum(
            bool(isinstance(p, dict) and p.get("bounded")) for p in task.parsed
        )
        if task.scores is None:
            result.unjudged_reason = task.failure
            return
        result.scores = list(task.scores)

    # -- statistics, audit -------------------------------------------------------------------------------------

    def _statistics(self, results: list[_GroupResult], everything: list[_Candidate], latency: float) -> dict[str, float]:
        stats = super()._statistics(results, everything, latency)
        asked = [r for r in results if "judge_prompts" in r.details]
        stats["judge_calls_per_group"] = (
            sum(len(r.attempts) for r in asked) / len(asked) if asked else 0.0
        )
        stats["bounded_verdicts"] = float(sum(r.details.get("bounded_verdicts", 0) for r in results))
        return stats

    def _audit_record(self, result: _GroupResult, everything: list[_Candidate]) -> dict[str, Any]:
        first = everything[result.members[0]]
        return {
            "judge": self._judge.describe(),
            "question": first.question,
            "reference": first.reference,
            "candidates": result.unique,
            "completion_indices": result.members,
            "completion_candidate": result.member_unique,
            "scores": result.scores,
            "unjudged_reason": result.unjudged_reason,
        }

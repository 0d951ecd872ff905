"""GroupRelativeRewardFunction: judge each GRPO completion group jointly with a GRRM judge, inside plain TRL."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..engines import JudgeConfig, JudgeEngine
from ..formats.gqm import CANDIDATE_IDS
from ..formats.mt import completion_text, get_extractor
from ..judging import GQMJudge, JudgeGroup, JudgeTask, SQMJudge, distinct_candidates
from ..judging.failures import TOO_FEW_DISTINCT
from ..ranking import tie_rate
from .base import (
    JudgeOptions,
    UNJUDGED_REASONS,  # noqa: F401  (kept importable from here)
    GroupJudgingReward,
    _GroupResult as _BaseGroupResult,
    bad_completion,
    bad_text_value,
    batch_problem,
    missing_column,
)


@JudgeOptions._wrap_init
@dataclass
class GroupRelativeRewardConfig(JudgeOptions):
    """Every knob of :class:`GroupRelativeRewardFunction`. ``GroupRelativeRewardConfig.grrm_paper()`` gives the
    settings of the GRRM paper's MT GRPO runs.

    Reward of a completion whose group was judged: ``score * score_scale - soft_overlong_penalty(tokens)``.
    A completion with no extractable translation gets ``invalid_completion_reward``; the valid completions of a
    group that could not be judged get ``unjudged_reward``. Either may be ``None``: TRL then treats the completion as
    unscored (NaN reward, zero advantage).
    """

    judge: JudgeConfig | dict | str | None = field(default=None, metadata={"help": "The judge: engine, sampling and retries (trl_grrm.engines.JudgeConfig, or a mapping of its fields; a YAML `judge:` block). The old flat keywords (judge_model=, backend=, temperature= ...) are still accepted."})

    # rewards
    score_scale: float = field(default=0.1, metadata={"help": "Reward per judge score point (scores are 0-10)."})
    invalid_completion_reward: float | None = field(default=0.0, metadata={"help": "Reward for a completion with no extractable translation (None: unscored)."})
    unjudged_reward: float | None = field(default=None, metadata={"help": "Reward for valid completions of a group that could not be judged (None: unscored)."})
    unjudged_overlong_penalty: bool = field(default=False, metadata={"help": "Also subtract the soft overlong penalty from unjudged_reward, so that in groups the judge could not score a short valid completion still beats an over-long one (the official GRRM code does this)."})
    overlong_max_tokens: int | None = field(default=None, metadata={"help": "Soft overlong penalty: full penalty at this completion length (None: off)."})
    overlong_buffer_tokens: int = field(default=0, metadata={"help": "Soft overlong penalty ramps up over this many tokens before overlong_max_tokens."})
    overlong_penalty: float = field(default=0.0, metadata={"help": "Largest overlong penalty subtracted from the reward."})

    # inputs
    extractor: str = field(default="codeblock", metadata={"help": "How to pull the translation out of a completion: codeblock, codeblock_strict, last_line, full, or your own as 'package.module:function' (None: no usable translation, the invalid-completion reward)."})
    source_column: str = field(default="src_text", metadata={"help": "Dataset column with the source text."})
    source_language_column: str = field(default="src_lang", metadata={"help": "Dataset column with the source language (code or name)."})
    target_language_column: str = field(default="trg_lang", metadata={"help": "Dataset column with the target language (code or name)."})
    language_names: dict[str, str] = field(default_factory=dict, metadata={"help": "Extra language code -> English name entries."})
    shuffle_candidates: bool = field(default=False, metadata={"help": "Present candidates to the judge in a seeded random order (position-bias control)."})
    judge_style: Literal["gqm", "sqm"] = field(default="gqm", metadata={"help": "'gqm': the whole group in one prompt (GRRM); 'sqm': the paper's pointwise baseline, one prompt per distinct candidate, with the same batching, retries and failure policy (for comparisons such as trl_grrm.mini's reproduction)."})

    # grouping and distribution
    num_generations: int | None = field(default=None, metadata={"help": "Group size: set it to GRPOConfig.num_generations (checked against the trainer). None: read from the GRPOTrainer calling the function, with a warning."})
    num_generations_eval: int | None = field(default=None, metadata={"help": "Group size in evaluation, as GRPOConfig.num_generations_eval (None: num_generations)."})
    max_candidates_per_call: int | None = field(default=4, metadata={"help": "Most distinct candidates in one judge prompt (GRRM was trained on groups of 2-4). Larger groups are judged in overlapping subgroups and one score per candidate is fitted (Plackett-Luce) on the 0-10 scale. None: the whole group in one prompt (warned above 4)."})
    subgroup_coverage: int = field(default=2, metadata={"help": "Subgroups each candidate appears in when a group is split (>= 2; 2 keeps the group connected at ceil(2n/k) calls, 3 averages more judge noise for 50% more calls)."})
    candidate_orders: int = field(default=1, metadata={"help": "Orders in which a group of at most max_candidates_per_call is shown to the judge, one call each (the given order, its reverse, then rotations); a candidate's score is its mean over the orders. 2 evens out a judge's preference for early or late slots, at twice the calls."})
    judge_on: Literal["all_processes", "main_process"] = field(default="all_processes", metadata={"help": "Spread groups over all processes' engines, or judge everything on rank 0."})

    # failure policy and logging
    ranking_mismatch: Literal["count", "fail"] = field(default="count", metadata={"help": "A ranking line that disagrees with the scores: only counted, or treated as a parse failure."})
    audit_log_path: str | None = field(default=None, metadata={"help": "Append every judge request/response to this JSONL file (rank 0, flushed every step)."})
    name: str = field(default="grrm_judge", metadata={"help": "Reward function name in TRL's logs."})

    def __post_init__(self) -> None:
        self._init_judge()
        get_extractor(self.extractor)
        if self.ranking_mismatch not in ("count", "fail"):
            raise ValueError(f"ranking_mismatch must be 'count' or 'fail', got {self.ranking_mismatch!r}")
        if self.judge_style not in ("gqm", "sqm"):
            raise ValueError(f"judge_style must be 'gqm' or 'sqm', got {self.judge_style!r}")
        if self.judge_on not in ("all_processes", "main_process"):
            raise ValueError(f"judge_on must be 'all_processes' or 'main_process', got {self.judge_on!r}")
        if self.num_generations is not None and not 2 <= self.num_generations:
            raise ValueError(f"num_generations must be at least 2, got {self.num_generations}")
        if self.num_generations_eval is not None and self.num_generations_eval < 1:
            raise ValueError(f"num_generations_eval must be at least 1, got {self.num_generations_eval}")
        if self.max_candidates_per_call is not None and not 2 <= self.max_candidates_per_call <= len(CANDIDATE_IDS):
            raise ValueError(
                f"max_candidates_per_call must be in 2..{len(CANDIDATE_IDS)} or None, got {self.max_candidates_per_call}"
            )
        if self.subgroup_coverage < 2:
            raise ValueError(f"subgroup_coverage must be >= 2, got {self.subgroup_coverage}")
        if self.candidate_orders < 1:
            raise ValueError(f"candidate_orders must be >= 1, got {self.candidate_orders}")
        if self.candidate_orders > 1 and self.judge_style == "sqm":
            raise ValueError("candidate_orders applies to the GQM judge; an SQM prompt holds one candidate")

    def judge_format(self) -> GQMJudge | SQMJudge:
        """The judge format these fields describe: GQM (subgroups per ``max_candidates_per_call`` /
        ``subgroup_coverage``, orders per ``candidate_orders``), or SQM with ``judge_style="sqm"``."""
        if self.judge_style == "sqm":
            return SQMJudge(language_names=self.language_names)
        return GQMJudge(
            ranking_mismatch=self.ranking_mismatch,
            language_names=self.language_names,
            max_candidates_per_call=self.max_candidates_per_call,
            subgroup_coverage=self.subgroup_coverage,
            candidate_orders=self.candidate_orders,
        )

    @classmethod
    def grrm_paper(
        cls, judge_model: str | None = "double7/Qwen2.5-7B-GRRM", judge: JudgeConfig | dict | None = None, **overrides: Any
    ) -> GroupRelativeRewardConfig:
        """The GRRM paper's MT GRPO reward settings (scores x 0.01, -0.04 for invalid completions, overlong buffer
        2048 of 4096 tokens with penalty 0.04, greedy judge, 2048-token judge prompts, 8192-token judge answers, the
        strict single-code-block extractor), plus bounded retries, which the paper lacked.

        ``judge`` as a mapping is laid over the paper's judge settings (``{"base_url": ..., "max_tokens": 32}``); a
        :class:`~trl_grrm.engines.JudgeConfig` is used as it is. ``judge_model`` names the judge when ``judge`` does
        not. Other keywords override reward fields (or, in the old flat spelling, judge options).

        Valid completions of a group the judge could not score get what the official code gives them when the judge
        answer does not parse: -0.04 x 0.01 = -0.0004 minus their overlong penalty, so such a group still ranks
        valid above invalid and short above over-long. The official code gives everyone -0.04 (zero advantage)
        when the group has fewer than two distinct valid translations or its judge prompt is too long; here those
        groups get the same fallback as a parse failure (docs/reproduction.md).

        Example:
            >>> config = GroupRelativeRewardConfig.grrm_paper(judge={"base_url": "http://judge:8000/v1"})
            >>> config.score_scale, config.judge.model, config.judge.max_prompt_tokens
            (0.01, 'double7/Qwen2.5-7B-GRRM', 2048)
        """
        if not isinstance(judge, JudgeConfig):
            paper_judge = dict(temperature=0.0, max_prompt_tokens=2048, max_tokens=8192)
            if judge_model is not None:
                paper_judge["model"] = judge_model
            judge = {**paper_judge, **dict(judge or {})}
        paper = dict(
            judge=judge,
            score_scale=0.01,
            invalid_completion_reward=-0.04,
            unjudged_reward=-0.04 * 0.01,
            unjudged_overlong_penalty=True,
            overlong_max_tokens=4096,
            overlong_buffer_tokens=2048,
            overlong_penalty=0.04,
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

    @property
    def group_key(self) -> tuple[str, str, str, str]:
        return (self.prompt_key, self.source, self.source_language, self.target_language)


@dataclass
class _GroupResult(_BaseGroupResult):
    """The outcome for one group, shared with every process; GQM adds the subgroups that gave no judgment."""

    failed_subgroups: int = 0  # subgroups of a split group with no judgment (the group may still be judged)


class GroupRelativeRewardFunction(GroupJudgingReward):
    """A TRL reward function that judges every completion group jointly with a GRRM (GQM) judge.

    Pass it to an unmodified ``trl.GRPOTrainer(reward_funcs=[...])``. On every step it gathers the completions of
    all processes, cuts them into the groups TRL sampled (``num_generations`` each: set it to the GRPOConfig's), judges
    each group once with one prompt listing the group's distinct translations, spreads the groups over the
    processes' engines in one batched call each, and hands every process the rewards of its own completions.

    Example:
        >>> judge = GroupRelativeRewardFunction(
        ...     judge_model="double7/Qwen2.5-7B-GRRM", backend="openai", base_url="http://judge-host:8000/v1",
        ...     num_generations=4,
        ... )  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model=..., reward_funcs=[judge], args=GRPOConfig(num_generations=4), ...)  # doctest: +SKIP
    """

    failure_prefix = "GRRM judging failed: "
    extracted_column = "translation"

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
        super().__init__(config, engine)
        self._extract: Callable[[str], str | None] = get_extractor(config.extractor)
        self._judge = config.judge_format()

    def _candidate(
        self, i: int, prompt: Any, completions: list[Any], completion_ids: list[list[int]] | None, columns: dict[str, Any]
    ) -> _Candidate:
        c = self.config
        return _Candidate(
            prompt_key=prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str),
            source=columns[c.source_column][i],
            source_language=columns[c.source_language_column][i],
            target_language=columns[c.target_language_column][i],
            translation=self._extract(completion_text(completions[i])),
            num_tokens=len(completion_ids[i]) if completion_ids is not None else 0,
        )

    def _check_inputs(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]] | None,
        columns: dict[str, Any],
    ) -> str | None:
        """The first problem with this process's inputs, as a message naming the row and column, or ``None``."""
        c = self.config
        names = (c.source_column, c.source_language_column, c.target_language_column)
        hint = "`source_column`/`source_language_column`/`target_language_column`"
        return (
            missing_column(columns, names, hint)
            or batch_problem(prompts, completions, completion_ids)
            or bad_text_value(columns, names, len(completions))
            or bad_completion(completions)
        )

    def _extracted(self, candidate: _Candidate) -> str | None:
        return candidate.translation

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
            if self._judge.max_candidates is not None and len(result.unique) > self._judge.max_candidates:
                raise ValueError(
                    f"a group has {len(result.unique)} distinct candidates; the judge format allows "
                    f"{self._judge.max_candidates}"
                )
            order = list(range(len(result.unique)))
            if c.shuffle_candidates:
                random.Random(f"{c.judge.seed}-{self._calls}-{group_index}").shuffle(order)
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
        split = len(task.requests) > 1  # a large group judged in subgroups, or a small one in several orders
        for request in task.requests:
            for attempt in request.attempts:
                record = {"attempt": attempt["attempt"], "request": request.messages}
                if split:
                    record["subgroup"] = request.prompt_index
                record.update((k, v) for k, v in attempt.items() if k not in ("attempt", "parsed"))
                parsed = attempt.get("parsed")
                if isinstance(parsed, int):  # an SQM answer: one candidate's score
                    record["score"] = parsed
                elif parsed is not None:
                    record["scores"] = dict(zip(CANDIDATE_IDS, parsed["scores"]))
                    if "positions" in parsed:  # which candidates (indices into `candidates`) A, B, ... were
                        record["candidates"] = [task.order[p] for p in parsed["positions"]]
                    if parsed["revised_scores"]:
                        record["revised_scores"] = True
                result.attempts.append(record)
                result.prompt_tokens += attempt["prompt_tokens"]
                result.completion_tokens += attempt["completion_tokens"]
                result.request_retries += attempt.get("request_retries", 0)
        result.failed_subgroups = sum(r.failure is not None for r in task.requests) if split else 0
        if task.scores is None:
            result.unjudged_reason = task.failure
            return
        # One call: the judge's integer scores; subgroups: fitted scores on the same 0-10 scale; orders: means.
        result.scores = list(task.scores)
        if any(isinstance(p, int) for p in task.parsed):  # SQM: no ranking line to check
            return
        flags = GQMJudge.group_flags(task.parsed)
        result.ranking_agrees, result.revised_scores = flags["ranking_agrees"], flags["revised_scores"]

    # -- rewards, statistics, audit ----------------------------------------------------------------------------

    def _statistics(self, results: list[_GroupResult], everything: list[_Candidate], latency: float) -> dict[str, float]:
        stats = super()._statistics(results, everything, latency)
        judged = [r for r in results if r.scores is not None]
        with_ranking = [r for r in judged if r.ranking_agrees is not None]
        stats.update({
            "failed_subgroups": float(sum(r.failed_subgroups for r in results)),
            "ranking_disagreement_rate": (
                sum(not r.ranking_agrees for r in with_ranking) / len(with_ranking) if with_ranking else 0.0
            ),
            "ranking_missing_rate": (len(judged) - len(with_ranking)) / len(judged) if judged else 0.0,
            "revised_scores_rate": sum(r.revised_scores for r in judged) / len(judged) if judged else 0.0,
            "tie_rate": (
                sum(tie_rate(dict(enumerate(r.scores))) for r in judged) / len(judged) if judged else 0.0
            ),
        })  # fmt: skip
        return stats

    def _audit_record(self, result: _GroupResult, everything: list[_Candidate]) -> dict[str, Any]:
        first = everything[result.members[0]]
        return {
            "source": first.source,
            "source_language": first.source_language,
            "target_language": first.target_language,
            "candidates": result.unique,
            "completion_indices": result.members,
            "completion_candidate": result.member_unique,
            "scores": result.scores,
            "unjudged_reason": result.unjudged_reason,
            "ranking_agrees": result.ranking_agrees,
        }

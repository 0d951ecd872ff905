"""The judging core (trl_grrm.judging): formats, the retry policy, the one runner, rank/best_of_n, and build_engine.

Engines here are the in-memory ScriptedEngine: answers come from a function, every prompt is recorded.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from trl_grrm.engines import (
    VLLM_MEMORY_SHARE,
    EngineConfig,
    JudgeOutput,
    OpenAIEngine,
    SamplingSettings,
    build_engine,
)
from trl_grrm.formats.gqm import format_gqm_answer, parse_gqm_prompt
from trl_grrm.formats.sqm import format_sqm_answer, parse_sqm_prompt
from trl_grrm.judging import (
    GQMJudge,
    JudgeAnswerError,
    JudgeFormat,
    JudgeGroup,
    JudgeRunner,
    JudgeTask,
    RetryPolicy,
    SQMJudge,
    best_of_n,
    rank,
)
from trl_grrm.testing.scripted_engine import ScriptedEngine

PACKAGE = Path(__file__).resolve().parents[1] / "trl_grrm"


def length_gqm(prompt: str, attempt: int = 0, sampling: SamplingSettings | None = None) -> str:
    """A GQM answer that scores each shown candidate by its length (capped at 10)."""
    shown = parse_gqm_prompt(prompt).candidates
    return format_gqm_answer("ok", {"ABCDEFGH"[i]: min(len(c), 10) for i, c in enumerate(shown)})


def group(source: str, *candidates: str) -> JudgeGroup:
    return JudgeGroup(source, list(candidates), "en", "de")


# -- retry policy ------------------------------------------------------------------------------------------------


def test_retry_policy_reasks_warmer_with_a_new_seed_each_time():
    policy = RetryPolicy(max_retries=3, retry_temperature=0.7)
    base = SamplingSettings(temperature=0.0, top_p=0.9, max_tokens=50, seed=11)
    schedule = [policy.sampling(base, a) for a in range(4)]
    assert schedule[0] == base
    assert [s.temperature for s in schedule] == [0.0, 0.7, 0.7, 0.7]
    assert [s.seed for s in schedule] == [11, 11 + 1_000_003, 11 + 2 * 1_000_003, 11 + 3 * 1_000_003]
    assert all((s.top_p, s.max_tokens) == (0.9, 50) for s in schedule)


def test_retry_policy_never_reasks_colder_than_the_first_attempt_and_keeps_an_unseeded_run_unseeded():
    later = RetryPolicy(retry_temperature=0.3).sampling(SamplingSettings(temperature=0.8, seed=None), 1)
    assert (later.temperature, later.seed) == (0.8, None)


@pytest.mark.parametrize("kwargs, message", [({"max_retries": -1}, "max_retries"), ({"max_retries": 11}, "0..10"),
                                             ({"retry_temperature": -0.1}, "retry_temperature")])
def test_retry_policy_rejects_bad_settings_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


# -- the runner ----------------------------------------------------------------------------------------------------


def test_every_round_is_one_engine_call_and_only_failed_prompts_are_asked_again():
    def answer(prompt, attempt, sampling):
        if "Zwei" in prompt and attempt == 0:
            return "no scores here"
        return length_gqm(prompt)

    engine = ScriptedEngine(answer)
    tasks = [JudgeTask(group(s, "a", "bbb")) for s in ("Eins.", "Zwei.", "Drei.")]
    JudgeRunner(engine, RetryPolicy(max_retries=2, retry_temperature=0.6), SamplingSettings(seed=1)).run(
        GQMJudge(), tasks
    )
    assert engine.calls == 2 and len(engine.prompts) == 3 + 1
    assert [(s.temperature, s.seed) for s in engine.samplings] == [(0.0, 1), (0.6, 1 + 1_000_003)]
    assert [t.scores for t in tasks] == [[1, 3]] * 3 and all(t.failure is None for t in tasks)
    first, second = tasks[1].requests[0].attempts
    assert "parse_error" in first and "parsed" not in first
    assert (second["attempt"], second["temperature"], second["parsed"]["scores"]) == (1, 0.6, [1, 3])


def test_scores_come_back_in_the_groups_own_order():
    engine = ScriptedEngine(length_gqm)
    task = JudgeTask(group("Hallo.", "a", "bbbb", "cc"), order=[2, 0, 1])  # shown: cc, a, bbbb
    JudgeRunner(engine).run(GQMJudge(), [task])
    assert parse_gqm_prompt(engine.prompts[0]).candidates == ["cc", "a", "bbbb"]
    assert task.scores == [1, 4, 2]


def test_each_failure_is_counted_by_its_reason():
    def answer(prompt, attempt, sampling):
        source = parse_gqm_prompt(prompt).source_text
        if source == "Down.":
            return JudgeOutput(text=None, error="unavailable", detail="503")
        if source == "Cut.":
            return JudgeOutput(text="A: 1, B: 1", error="truncated", finish_reason="length")
        if source == "Noise.":
            return "no scores"
        return length_gqm(prompt)

    engine = ScriptedEngine(answer)
    long_source = "Long " + "word " * 400 + "end."
    tasks = [JudgeTask(group(s, "a", "bb")) for s in ("Down.", "Cut.", "Noise.", "Fine.", long_source)]
    JudgeRunner(engine, RetryPolicy(max_retries=1), max_prompt_tokens=300).run(GQMJudge(), tasks)
    assert [t.failure for t in tasks] == ["unavailable", "truncated", "parse_failed", None, "prompt_too_long"]
    assert [t.scores for t in tasks] == [None, None, None, [1, 2], None]
    # The long prompt is never sent; the engine error is final; cut and unparsable answers are asked twice.
    assert [len(t.requests[0].attempts) for t in tasks] == [1, 2, 2, 1, 0]
    assert all(long_source not in p for p in engine.prompts)


def test_unavailable_can_be_made_to_raise():
    engine = ScriptedEngine(lambda p, a, s: JudgeOutput(text=None, error="unavailable", detail="connection refused"))
    runner = JudgeRunner(engine, on_unavailable="raise")
    with pytest.raises(RuntimeError, match="judge engine unavailable: connection refused"):
        runner.run(GQMJudge(), [JudgeTask(group("x", "a", "b"))])


def test_an_engine_that_drops_answers_is_an_error_not_a_silent_gap():
    class Lossy(ScriptedEngine):
        def generate(self, prompts, sampling):
            return super().generate(prompts, sampling)[:-1]

    with pytest.raises(RuntimeError, match="answered 1 of 2 prompts"):
        JudgeRunner(Lossy(length_gqm)).run(GQMJudge(), [JudgeTask(group(s, "a", "b")) for s in ("x", "y")])


def test_a_pointwise_format_sends_one_prompt_per_candidate_in_one_call():
    engine = ScriptedEngine(lambda p, a, s: format_sqm_answer("ok", len(parse_sqm_prompt(p).translation)))
    tasks = [JudgeTask(group("Hi.", "abc", "a")), JudgeTask(group("Yo.", "ab", "abcd", "a"))]
    JudgeRunner(engine).run(SQMJudge(), tasks)
    assert engine.calls == 1 and len(engine.prompts) == 5
    assert [t.scores for t in tasks] == [[3.0, 1.0], [2.0, 4.0, 1.0]]


# -- a verdict-probability format ----------------------------------------------------------------------------------


class VerdictEngine(ScriptedEngine):
    """Scripted verdict log-probabilities: ``answer(prompt)`` returns the ``{token: logprob}`` the engine reports."""

    def __init__(self, answer):
        super().__init__(lambda p, a, s: "never generated")
        self.verdict_answer = answer
        self.verdict_calls: list[tuple[list[str], tuple[str, ...], int]] = []

    def verdict_logprobs(self, prompts, verdict_tokens, top_k=20):
        contents = [m[-1]["content"] for m in prompts]
        self.verdict_calls.append((contents, tuple(verdict_tokens), top_k))
        return [JudgeOutput(text=None, verdict_logprobs=self.verdict_answer(c)) for c in contents]


class PairVerdict(JudgeFormat):
    """A toy pairwise format: one prompt per ordered pair, P(A) from the A/B log-probabilities, mean win probability."""

    name = "pair-verdict"
    output_kind = "verdict_logprobs"
    verdict_tokens = ("A", "B")
    verdict_top_k = 5

    def prompts(self, group, candidates):
        n = len(candidates)
        return [[{"role": "user", "content": f"A: {candidates[i]}\nB: {candidates[j]}"}]
                for i in range(n) for j in range(n) if i != j]

    def parse(self, output, prompt_index, num_candidates):
        logprobs = output.verdict_logprobs or {}
        missing = [t for t in self.verdict_tokens if t not in logprobs]
        if missing:
            raise JudgeAnswerError(f"verdict token(s) {missing} not in the top {self.verdict_top_k}")
        import math

        a, b = math.exp(logprobs["A"]), math.exp(logprobs["B"])
        return a / (a + b)

    def combine(self, parsed, num_candidates):
        pairs = [(i, j) for i in range(num_candidates) for j in range(num_candidates) if i != j]
        wins = [0.0] * num_candidates
        for (i, j), p_first in zip(pairs, parsed):
            wins[i] += p_first
            wins[j] += 1 - p_first
        return [w / (2 * (num_candidates - 1)) for w in wins]


def test_a_verdict_format_reads_logprobs_from_one_call_and_is_never_reasked():
    import math

    def answer(content):
        first = content.split("\n")[0][3:]
        if first == "?":
            return {"A": math.log(0.9)}  # B fell out of the top-k: not a judgment, and not guessed
        return {"A": math.log(0.75), "B": math.log(0.25)} if first == "good" else {"A": math.log(0.25), "B": math.log(0.75)}

    engine = VerdictEngine(answer)
    tasks = [JudgeTask(group("s", "good", "bad")), JudgeTask(group("t", "?", "bad"))]
    JudgeRunner(engine, RetryPolicy(max_retries=3)).run(PairVerdict(), tasks)
    assert engine.calls == 0 and len(engine.verdict_calls) == 1  # no generate, one batched verdict call
    contents, tokens, top_k = engine.verdict_calls[0]
    assert len(contents) == 4 and tokens == ("A", "B") and top_k == 5
    # good-vs-bad: P(good first) = 0.75, P(good second) = 1 - 0.25 = 0.75 -> mean 0.75
    assert tasks[0].scores == pytest.approx([0.75, 0.25])
    assert tasks[1].failure == "parse_failed" and len(tasks[1].requests[0].attempts) == 1
    assert tasks[1].requests[0].attempts[0]["verdict_logprobs"] == {"A": pytest.approx(math.log(0.9))}


# -- rank and best_of_n --------------------------------------------------------------------------------------------


def test_rank_judges_many_groups_in_one_call_and_returns_scores_ranking_and_winner():
    engine = ScriptedEngine(length_gqm)
    results = rank(GQMJudge(), engine, ["Eins.", "Zwei."], [["ab", "abcd", "a"], ["xyz", "xy"]],
                   source_language="en", target_language=["de", "fr"])
    assert engine.calls == 1 and len(engine.prompts) == 2
    assert [parse_gqm_prompt(p).target_language for p in engine.prompts] == ["German", "French"]
    assert [(r.scores, r.ranking, r.winner) for r in results] == [([2, 4, 1], [1, 0, 2], 1), ([3, 2], [0, 1], 0)]


def test_rank_with_a_shuffle_seed_shows_other_orders_but_scores_the_input_order():
    engine = ScriptedEngine(length_gqm)
    candidates = ["a", "bb", "ccc", "dddd"]  # one call (groups above 4 go to subgroups, tests/test_gqm_subgroups.py)
    [result] = rank(GQMJudge(), engine, "Src.", candidates, source_language="en", target_language="de", shuffle_seed=4)
    assert parse_gqm_prompt(engine.prompts[0]).candidates != candidates
    assert result.scores == [1, 2, 3, 4] and result.winner == 3


def test_best_of_n_returns_the_winner_or_none_when_the_judge_gave_no_scores():
    def answer(prompt, attempt, sampling):
        return "garbage" if parse_gqm_prompt(prompt).source_text == "Bad." else length_gqm(prompt)

    picks = best_of_n(GQMJudge(), ScriptedEngine(answer), ["Good.", "Bad."], [["a", "aaa"], ["b", "bbb"]],
                      source_language="en", target_language="de", policy=RetryPolicy(max_retries=0))
    assert picks == ["aaa", None]


def test_rank_refuses_groups_the_format_cannot_take():
    with pytest.raises(ValueError, match="group 0 has 27 candidates; the gqm judge takes at most 26"):
        rank(GQMJudge(max_candidates_per_call=None), ScriptedEngine(length_gqm), "s", [str(i) for i in range(27)],
             source_language="en",
             target_language="de")
    with pytest.raises(ValueError, match="2 sources but 1 candidate lists"):
        rank(GQMJudge(), ScriptedEngine(length_gqm), ["s", "t"], [["a", "b"]])


# -- engines: one config, one constructor ------------------------------------------------------------------------


def test_build_engine_makes_an_openai_engine_with_the_documented_defaults():
    engine = build_engine(EngineConfig(model="judge", backend="openai", base_url="http://127.0.0.1:9/v1"))
    assert isinstance(engine, OpenAIEngine)
    assert (engine.base_urls, engine.max_concurrency, engine.timeout, engine.max_retries, engine.backoff_seconds) == (
        ["http://127.0.0.1:9/v1"], 64, 600.0, 3, 1.0)  # fmt: skip
    assert EngineConfig(model="m").gpu_memory_utilization == VLLM_MEMORY_SHARE == 0.9


@pytest.mark.parametrize("kwargs, message", [
    ({"backend": "sglang"}, "backend must be"),
    ({"backend": "openai"}, "needs base_url"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
])  # fmt: skip
def test_engine_config_rejects_bad_settings_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(model="m", **kwargs)


def test_every_caller_describes_its_engine_with_the_one_config():
    from trl_grrm.evaluation import ranking
    from trl_grrm.rewards import GroupRelativeRewardConfig

    reward = GroupRelativeRewardConfig(judge_model="j", backend="openai", base_url="http://h/v1", max_request_retries=5,
                                       request_timeout=30.0, judge_tokenizer="tok")
    assert reward.engine_config() == EngineConfig(model="j", backend="openai", base_url=["http://h/v1"],
                                                  max_request_retries=5, request_timeout=30.0, tokenizer="tok",
                                                  gpu_memory_utilization=0.3)
    args = ranking.parse_args(["--dataset", "d", "--judge.model", "m", "--judge.tensor_parallel_size", "2"])
    config = ranking.engine_config(args)
    assert (config.backend, config.tensor_parallel_size, config.gpu_memory_utilization) == ("vllm", 2, 0.9)
    assert isinstance(args, argparse.Namespace)


def test_the_runner_is_the_only_place_that_asks_an_engine():
    """One judging loop: outside the engines themselves, only judging/runner.py calls generate/verdict_logprobs."""
    pattern = re.compile(r"\bengine\.(generate|verdict_logprobs)\(")
    callers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8")) and path.parent.name not in ("engines", "testing")
    )
    assert callers == ["judging/runner.py"]


# -- eval-mt's GRRM judge on the core (no TRL call) -------------------------------------------------------------


def _mt_item(index: int, hypotheses: list[str | None], reference: str | None = None):
    from trl_grrm.evaluation.mt import EvalItem

    item = EvalItem(index, f"Quelle {index}.", "en", "de", reference, prompt="p")
    item.hypotheses = hypotheses
    return item


def test_eval_mt_samples_mode_judges_each_distinct_sample_once_and_scores_failed_extractions_zero(tmp_path):
    from trl_grrm.engines import JudgeConfig
    from trl_grrm.evaluation.mt import JudgeSettings, judge_items

    engine = ScriptedEngine(length_gqm)
    items = [_mt_item(0, ["ab", "ab ", None, "abcd"]), _mt_item(1, ["x", " x", None, None])]
    audit = tmp_path / "audit.jsonl"
    summary = judge_items(items, JudgeSettings(JudgeConfig(model="judge", base_url=["http://127.0.0.1:9/v1"]),
                                               mode="samples", audit_log=str(audit)), engine=engine)
    # one prompt, two distinct candidates; identical samples share a score, the failed extraction scores 0
    assert len(engine.prompts) == 1 and sorted(parse_gqm_prompt(engine.prompts[0]).candidates) == ["ab", "abcd"]
    assert items[0].judge == {"scores": [2.0, 2.0, 0.0, 4.0]}
    # one distinct sample: nothing to compare, no call, counted
    assert items[1].judge["unjudged"] and items[1].judge["scores"] == [None, None, 0.0, 0.0]
    assert (summary["judged_groups"], summary["unjudged_groups"], summary["too_few_distinct"]) == (1, 1, 1)
    assert summary["judge_calls"] == 1.0 and not engine.closed  # a caller's engine is left open
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["unjudged_reason"] for r in records] == [None, "too_few_distinct"]
    assert records[0]["attempts"][0]["request"][0]["content"] == engine.prompts[0]


def test_the_reward_function_reasks_on_the_cores_schedule():
    from trl_grrm import GroupRelativeRewardFunction

    engine = ScriptedEngine(lambda p, attempt, s: "garbage" if attempt == 0 else length_gqm(p))
    reward = GroupRelativeRewardFunction(judge_model="judge", backend="openai", base_url="http://127.0.0.1:9/v1",
                                         engine=engine, extractor="full", num_generations=2, temperature=0.5,
                                         retry_temperature=0.2, seed=7)
    rewards = reward(prompts=["p", "p"], completions=["a", "bbb"], src_text=["s", "s"], src_lang=["en", "en"],
                     trg_lang=["de", "de"])
    assert rewards == pytest.approx([0.1, 0.3])
    # a re-ask is never colder than the first ask, and gets its own seed
    assert [(s.temperature, s.seed) for s in engine.samplings] == [(0.5, 7), (0.5, 7 + 1_000_003)]

"""Groups of any size for the GQM judge: overlapping subgroups of at most 4, one fitted 0-10 score per candidate;
small groups shown whole in several orders (``candidate_orders``)."""

import json
import logging
import math
from collections import Counter

import pytest

from trl_grrm import GroupRelativeRewardConfig, GroupRelativeRewardFunction
from trl_grrm.comparisons import fit_subgroup_scores, subgroup_schedule
from trl_grrm.formats.gqm import format_gqm_answer, parse_gqm_prompt
from trl_grrm.judging import GQMJudge, JudgeGroup, JudgeRunner, JudgeTask, RetryPolicy
from trl_grrm.testing.scripted_engine import ScriptedEngine

# Candidate texts whose true quality is written in them: "cand-<i> q<quality>".
QUALITIES = [3, 9, 1, 7, 5, 8, 2, 6]
CANDIDATES = [f"cand-{i} q{q}" for i, q in enumerate(QUALITIES)]


def quality(text: str) -> int:
    return int(text.rsplit("q", 1)[1])


def true_quality_judge(prompt: str, attempt: int, sampling) -> str:
    """A judge whose score for every candidate it is shown is the candidate's true quality."""
    shown = parse_gqm_prompt(prompt).candidates
    return format_gqm_answer("ok", {"ABCD"[i]: quality(text) for i, text in enumerate(shown)})


def judge_group(judge, engine, candidates, order=None, retries=0):
    task = JudgeTask(JudgeGroup("Hello.", candidates, "en", "de"), order)
    JudgeRunner(engine, RetryPolicy(max_retries=retries)).run(judge, [task])
    return task


def covers_and_connects(n, subgroups):
    """Independent check: breadth-first search over 'shares a subgroup'."""
    members = [set(s) for s in subgroups]
    if set().union(*members) != set(range(n)):
        return False
    seen, frontier = {0}, [0]
    while frontier:
        v = frontier.pop()
        for group in members:
            if v in group:
                for w in group - seen:
                    seen.add(w)
                    frontier.append(w)
    return len(seen) == n


@pytest.mark.parametrize("n", [2, 3, 4])
def test_groups_of_four_or_fewer_keep_one_call_and_the_judges_scores(n):
    engine = ScriptedEngine(true_quality_judge)
    task = judge_group(GQMJudge(), engine, CANDIDATES[:n])
    assert len(engine.prompts) == 1
    assert parse_gqm_prompt(engine.prompts[0]).candidates == CANDIDATES[:n]
    assert task.scores == QUALITIES[:n] and all(isinstance(s, int) for s in task.scores)


def test_group_of_eight_is_judged_in_the_scheduled_subgroups():
    engine = ScriptedEngine(true_quality_judge)
    task = judge_group(GQMJudge(), engine, CANDIDATES)
    schedule = subgroup_schedule(8, 4, 2, seed=0)
    # ceil(coverage * n / k) = ceil(2 * 8 / 4) = 4 calls, one per subgroup, all in one batched engine call.
    assert len(engine.prompts) == 4 and engine.calls == 1
    shown = [parse_gqm_prompt(p).candidates for p in engine.prompts]
    assert shown == [[CANDIDATES[i] for i in subgroup] for subgroup in schedule]
    appearances = Counter(text for prompt in shown for text in prompt)
    assert set(appearances.values()) == {2}  # every candidate exactly twice
    slots = Counter((text, slot) for prompt in shown for slot, text in enumerate(prompt))
    assert max(slots.values()) == 1  # two appearances never in the same slot
    assert covers_and_connects(8, schedule)
    assert task.failure is None


def test_scores_of_a_true_quality_judge_keep_its_order_and_scale():
    task = judge_group(GQMJudge(), ScriptedEngine(true_quality_judge), CANDIDATES)
    schedule = subgroup_schedule(8, 4, 2, seed=0)
    # What each subgroup's answer said, by candidate, written from the qualities (not from the judge's output).
    answers = [{i: QUALITIES[i] for i in subgroup} for subgroup in schedule]
    assert task.scores == pytest.approx(fit_subgroup_scores(8, answers))
    assert sorted(range(8), key=lambda i: task.scores[i]) == sorted(range(8), key=lambda i: QUALITIES[i])
    # On the judge's own scale: every fitted score within one point of the true quality.
    assert all(abs(s - q) < 1.0 for s, q in zip(task.scores, QUALITIES))


def test_equal_quality_group_gets_exactly_that_score():
    # All ties: every Plackett-Luce strength is 0, so the slope is 0 and each score is its calls' mean (by hand: 6).
    candidates = [f"same-{i} q6" for i in range(9)]
    task = judge_group(GQMJudge(), ScriptedEngine(true_quality_judge), candidates)
    assert task.scores == pytest.approx([6.0] * 9)


def test_shown_order_does_not_change_whose_score_is_whose():
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    plain = judge_group(GQMJudge(), ScriptedEngine(true_quality_judge), CANDIDATES)
    shuffled = judge_group(GQMJudge(), ScriptedEngine(true_quality_judge), CANDIDATES, order)
    schedule = subgroup_schedule(8, 4, 2, seed=0)
    # The schedule is over shown positions: shown position p holds candidate order[p].
    answers = [{p: QUALITIES[order[p]] for p in subgroup} for subgroup in schedule]
    by_position = fit_subgroup_scores(8, answers)
    assert shuffled.scores == pytest.approx([by_position[order.index(i)] for i in range(8)])
    assert sorted(range(8), key=lambda i: shuffled.scores[i]) == sorted(range(8), key=lambda i: plain.scores[i])


def test_coverage_three_and_sixteen_candidates_grow_calls_linearly():
    candidates = [f"c{i} q{i % 11}" for i in range(16)]
    engine = ScriptedEngine(true_quality_judge)
    judge_group(GQMJudge(subgroup_coverage=3), engine, candidates)
    assert len(engine.prompts) == math.ceil(3 * 16 / 4)  # 12
    engine = ScriptedEngine(true_quality_judge)
    judge_group(GQMJudge(), engine, candidates)
    assert len(engine.prompts) == 8


def failing_on(bad_subgroups, candidates):
    """A true-quality judge that never gives a parsable answer for the listed subgroups' prompts."""
    bad = [sorted(candidates[i] for i in subgroup) for subgroup in bad_subgroups]

    def answer(prompt, attempt, sampling):
        if sorted(parse_gqm_prompt(prompt).candidates) in bad:
            return "I cannot decide."
        return true_quality_judge(prompt, attempt, sampling)

    return answer


def test_a_failed_subgroup_is_dropped_when_the_rest_still_connect():
    schedule = subgroup_schedule(8, 4, 2, seed=0)
    failed = next(g for g in range(4) if covers_and_connects(8, schedule[:g] + schedule[g + 1 :]))
    engine = ScriptedEngine(failing_on([schedule[failed]], CANDIDATES))
    task = judge_group(GQMJudge(), engine, CANDIDATES, retries=1)
    assert len(engine.prompts) == 4 + 1  # the failed subgroup was asked again once
    rest = [{i: QUALITIES[i] for i in s} for g, s in enumerate(schedule) if g != failed]
    assert task.failure is None
    assert task.scores == pytest.approx(fit_subgroup_scores(8, rest))
    assert [r.failure for r in task.requests].count("parse_failed") == 1


def test_group_is_unjudged_when_failed_subgroups_disconnect_it():
    schedule = subgroup_schedule(8, 4, 2, seed=0)
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    a, b = next(p for p in pairs if not covers_and_connects(8, [s for g, s in enumerate(schedule) if g not in p]))
    task = judge_group(GQMJudge(), ScriptedEngine(failing_on([schedule[a], schedule[b]], CANDIDATES)), CANDIDATES)
    assert task.scores is None and task.failure == "parse_failed"


def test_single_call_group_with_a_failed_call_is_unjudged():
    task = judge_group(GQMJudge(), ScriptedEngine(lambda p, a, s: "no scores"), CANDIDATES[:3])
    assert task.scores is None and task.failure == "parse_failed"


def test_group_flags_aggregate_over_subgroups():
    assert GQMJudge.group_flags([{"ranking_agrees": True, "revised_scores": False},
                                 {"ranking_agrees": False, "revised_scores": False}]) == {
        "ranking_agrees": False, "revised_scores": False}
    assert GQMJudge.group_flags([{"ranking_agrees": None, "revised_scores": False}, None]) == {
        "ranking_agrees": None, "revised_scores": False}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_candidates_per_call": 1}, "max_candidates_per_call must be in 2..26"),
    ({"subgroup_coverage": 1}, "subgroup_coverage must be"),
])
def test_bad_subgroup_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GQMJudge(**kwargs)
    with pytest.raises(ValueError, match=message):
        GroupRelativeRewardConfig(judge_model="j", backend="openai", base_url="http://127.0.0.1:1/v1", **kwargs)


# -- the reward function ---------------------------------------------------------------------------------------


def reward_call(reward, candidates):
    metrics = {}
    rewards = reward(
        prompts=["p"] * len(candidates), completions=candidates, completion_ids=[[0] * 3 for _ in candidates],
        src_text=["Hello."] * len(candidates), src_lang=["en"] * len(candidates), trg_lang=["de"] * len(candidates),
        trainer_state=None, log_metric=metrics.__setitem__,
    )
    return rewards, metrics


def make_reward(engine, **overrides):
    settings = dict(judge_model="judge", backend="openai", base_url="http://127.0.0.1:1/v1", extractor="full",
                    num_generations=8)
    return GroupRelativeRewardFunction(engine=engine, **{**settings, **overrides})


def test_reward_for_a_group_of_eight_uses_the_fitted_scores(tmp_path):
    engine = ScriptedEngine(true_quality_judge)
    audit = tmp_path / "audit.jsonl"
    rewards, metrics = reward_call(make_reward(engine, audit_log_path=str(audit)), CANDIDATES)
    answers = [{i: QUALITIES[i] for i in s} for s in subgroup_schedule(8, 4, 2, seed=0)]
    assert rewards == pytest.approx([0.1 * s for s in fit_subgroup_scores(8, answers)])
    assert metrics["grrm_judge/judge_calls"] == 4 and metrics["grrm_judge/unjudged_groups"] == 0
    assert metrics["grrm_judge/failed_subgroups"] == 0 and metrics["grrm_judge/ranking_disagreement_rate"] == 0
    [record] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [a["subgroup"] for a in record["attempts"]] == [0, 1, 2, 3]
    for attempt in record["attempts"]:  # which candidate each letter was, and the score it got
        assert list(attempt["scores"].values()) == [QUALITIES[i] for i in attempt["candidates"]]


def test_reward_counts_a_dropped_subgroup_and_still_judges_the_group():
    schedule = subgroup_schedule(8, 4, 2, seed=0)
    failed = next(g for g in range(4) if covers_and_connects(8, schedule[:g] + schedule[g + 1 :]))
    engine = ScriptedEngine(failing_on([schedule[failed]], CANDIDATES))
    rewards, metrics = reward_call(make_reward(engine, max_parse_retries=0), CANDIDATES)
    rest = [{i: QUALITIES[i] for i in s} for g, s in enumerate(schedule) if g != failed]
    assert rewards == pytest.approx([0.1 * s for s in fit_subgroup_scores(8, rest)])
    assert metrics["grrm_judge/failed_subgroups"] == 1 and metrics["grrm_judge/unjudged_groups"] == 0
    assert metrics["grrm_judge/parse_failure_rate"] == pytest.approx(1 / 4)


def test_group_of_four_reward_is_unchanged_by_the_subgroup_settings():
    rewards_default, _ = reward_call(make_reward(ScriptedEngine(true_quality_judge), num_generations=4), CANDIDATES[:4])
    rewards_off, _ = reward_call(
        make_reward(ScriptedEngine(true_quality_judge), num_generations=4, max_candidates_per_call=None), CANDIDATES[:4]
    )
    assert rewards_default == rewards_off == pytest.approx([0.1 * q for q in QUALITIES[:4]])


def test_subgroups_off_sends_one_prompt_and_warns_once(caplog):
    engine = ScriptedEngine(lambda p, a, s: format_gqm_answer(
        "ok", {"ABCDEFGH"[i]: quality(t) for i, t in enumerate(parse_gqm_prompt(p).candidates)}))
    reward = make_reward(engine, max_candidates_per_call=None)
    with caplog.at_level(logging.WARNING, logger="trl_grrm.judging.judges"):
        rewards, metrics = reward_call(reward, CANDIDATES)
        reward_call(reward, CANDIDATES)
    assert metrics["grrm_judge/judge_calls"] == 1
    assert rewards == pytest.approx([0.1 * q for q in QUALITIES])
    warnings = [r for r in caplog.records if "trained on groups of 2-4" in r.getMessage()]
    assert len(warnings) == 1


def test_subgroups_on_never_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="trl_grrm.judging.judges"):
        reward_call(make_reward(ScriptedEngine(true_quality_judge)), CANDIDATES)
    assert not [r for r in caplog.records if "trained on groups" in r.getMessage()]


# -- a real GRPOTrainer run --------------------------------------------------------------------------------------


def grpo_against_the_test_server(model_dir, tmp_path, num_generations, **reward_options):
    """Two GRPOTrainer steps of 8 completions (4 prompts) with the GQM reward judged by the local OpenAI-compatible
    test server (which scores len % 11): the reward's audit records and the number of requests the server got."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from trl_grrm.formats import build_mt_prompt
    from trl_grrm.testing.judge_server import JudgeServer

    sources = [f"Sentence number {i} is here." for i in range(4)]
    data = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": build_mt_prompt(s, "en", "de")}] for s in sources],
        "src_text": sources, "src_lang": ["en"] * 4, "trg_lang": ["de"] * 4,
    })  # fmt: skip
    audit = tmp_path / "audit.jsonl"
    args = GRPOConfig(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, num_generations=num_generations,
        max_completion_length=8, max_steps=2, logging_steps=1, learning_rate=0.05, use_cpu=True, report_to="none",
        save_strategy="no", seed=7, temperature=1.5,
    )
    with JudgeServer() as server:
        judge = GroupRelativeRewardFunction(judge_model="judge", backend="openai", base_url=server.base_url,
                                            extractor="full", audit_log_path=str(audit), **reward_options)
        trainer = GRPOTrainer(model=model_dir, reward_funcs=[judge], args=args, train_dataset=data)
        trainer.train()
        num_requests = len(server.requests)
    return [json.loads(line) for line in audit.read_text().splitlines()], num_requests


@pytest.mark.slow
def test_grpo_with_eight_generations_judges_every_group_in_subgroups(tiny_model_dir, tmp_path):
    from trl_grrm.testing.judge_server import length_score

    records, num_requests = grpo_against_the_test_server(tiny_model_dir, tmp_path, num_generations=8)
    assert len(records) == 2  # one group of 8 per step, 2 steps
    for record in records:
        distinct = len(record["candidates"])
        assert record["unjudged_reason"] is None, record["unjudged_reason"]
        expected_calls = 1 if distinct <= 4 else math.ceil(2 * distinct / 4)
        assert len(record["attempts"]) == expected_calls
        # The server scores by length; the fit over the schedule's subgroups gives the rewards.
        truth = [length_score("", text) for text in record["candidates"]]
        schedule = subgroup_schedule(distinct, 4, 2, seed=0)
        expected = fit_subgroup_scores(distinct, [{i: truth[i] for i in s} for s in schedule])
        if distinct <= 4:
            expected = truth
        rewards = [0.1 * expected[m] for m in record["completion_candidate"]]
        assert record["rewards"] == pytest.approx(rewards)
    assert any(len(r["candidates"]) > 4 for r in records)  # subgroups were actually used
    assert num_requests == sum(len(r["attempts"]) for r in records)


@pytest.mark.slow
def test_grpo_with_two_orders_judges_every_group_twice_reversed(tiny_model_dir, tmp_path):
    from trl_grrm.testing.judge_server import length_score

    records, num_requests = grpo_against_the_test_server(tiny_model_dir, tmp_path, num_generations=4,
                                                         candidate_orders=2)
    assert len(records) == 4  # two groups of 4 per step, 2 steps
    for record in records:
        distinct = len(record["candidates"])
        assert record["unjudged_reason"] is None, record["unjudged_reason"]
        assert [a["candidates"] for a in record["attempts"]] == [list(range(distinct)), list(range(distinct))[::-1]]
        truth = [length_score("", text) for text in record["candidates"]]  # the same in both orders: the mean
        assert record["rewards"] == pytest.approx([0.1 * truth[m] for m in record["completion_candidate"]])
    assert num_requests == 2 * len(records)


# -- eval-ranking --------------------------------------------------------------------------------------------------


def eval_ranking_one_group(tmp_path, texts, *flags):
    """``trl-grrm eval-ranking`` on one group against the local test server (which scores len % 11): the exit code,
    the prompts the server got, and the results file."""
    from trl_grrm.cli import main as cli_main
    from trl_grrm.testing.judge_server import JudgeServer

    data = tmp_path / "ranking.jsonl"
    data.write_text(json.dumps({"src_text": "s", "src_lang": "en", "trg_lang": "de", "mt_texts": texts,
                                "scores": [len(t) for t in texts]}) + "\n")  # fmt: skip
    out = tmp_path / "out.json"
    with JudgeServer() as server:
        rc = cli_main(["eval-ranking", "--dataset", str(data), "--output", str(out), "--no-progress", "--backend",
                       "openai", "--model", "judge", "--base-url", server.base_url, *flags])  # fmt: skip
        prompts = [request["prompt"] for request in server.requests]
    return rc, prompts, json.loads(out.read_text()) if rc == 0 else None


@pytest.mark.parametrize(("per_call", "requests"), [("4", 3), ("0", 1)])
def test_eval_ranking_splits_a_group_of_six_unless_told_not_to(per_call, requests, tmp_path):
    texts = ["a" * length for length in (3, 1, 6, 2, 5, 4)]  # all distinct scores
    rc, prompts, result = eval_ranking_one_group(tmp_path, texts, "--max-candidates-per-call", per_call)
    assert rc == 0 and len(prompts) == requests  # ceil(2 * 6 / 4) = 3 subgroups, or one prompt
    assert result["metrics"]["overall"]["accuracy"] == 1.0


# -- small groups shown in several orders (candidate_orders) --------------------------------------------------------


def slot_biased_judge(prompt: str, attempt: int, sampling) -> str:
    """A judge that adds 3, 2, 1, 0 points to the true quality of whoever it sees in slots A, B, C, D."""
    shown = parse_gqm_prompt(prompt).candidates
    return format_gqm_answer("ok", {"ABCD"[i]: quality(text) + 3 - i for i, text in enumerate(shown)})


def test_two_orders_cancel_a_judge_s_preference_for_early_slots():
    candidates = ["cand-0 q3", "cand-1 q5", "cand-2 q6", "cand-3 q4"]  # shown as stored, slot A beats better ones
    one_order = judge_group(GQMJudge(), ScriptedEngine(slot_biased_judge), candidates)
    assert one_order.scores == [6, 7, 7, 4]  # the bias has reordered the group
    engine = ScriptedEngine(slot_biased_judge)
    two_orders = judge_group(GQMJudge(candidate_orders=2), engine, candidates)
    shown = [parse_gqm_prompt(p).candidates for p in engine.prompts]
    assert shown == [candidates, candidates[::-1]] and engine.calls == 1  # both orders in one batched engine call
    # every candidate sat once in slot s and once in 3 - s: its mean is its quality + 1.5
    assert two_orders.scores == pytest.approx([3 + 1.5, 5 + 1.5, 6 + 1.5, 4 + 1.5])


# qualities low enough that the slot bias keeps every score within 0-10
LOW = ["cand-0 q3", "cand-1 q7", "cand-2 q1", "cand-3 q5"]


def test_orders_follow_the_shown_order_and_map_scores_back_to_their_candidates():
    order = [2, 0, 3, 1]
    engine = ScriptedEngine(slot_biased_judge)
    task = judge_group(GQMJudge(candidate_orders=4), engine, LOW, order)
    shown = [parse_gqm_prompt(p).candidates for p in engine.prompts]
    assert shown[0] == [LOW[i] for i in order] and shown[1] == shown[0][::-1] and len(shown) == 4
    assert task.scores == pytest.approx([3 + 1.5, 7 + 1.5, 1 + 1.5, 5 + 1.5])


def slot_biased_judge_failing_on(reversed_candidates: list[str]):
    """:func:`slot_biased_judge`, but no scores when shown ``reversed_candidates`` in reverse."""

    def judge(prompt: str, attempt: int, sampling) -> str:
        if parse_gqm_prompt(prompt).candidates == reversed_candidates[::-1]:
            return "I cannot decide."
        return slot_biased_judge(prompt, attempt, sampling)

    return judge


def test_an_order_that_never_parses_is_left_out_of_the_mean():
    candidates = LOW[:3]
    task = judge_group(GQMJudge(candidate_orders=2), ScriptedEngine(slot_biased_judge_failing_on(candidates)),
                       candidates, retries=1)  # fmt: skip
    assert task.failure is None and task.scores == [3 + 3, 7 + 2, 1 + 1]  # the stored order's answer alone
    assert [r.failure for r in task.requests] == [None, "parse_failed"]
    failed = judge_group(GQMJudge(candidate_orders=2), ScriptedEngine(lambda p, a, s: "no scores"), candidates)
    assert failed.scores is None and failed.failure == "parse_failed"


def test_orders_leave_groups_that_are_split_into_subgroups_alone():
    engine = ScriptedEngine(true_quality_judge)
    judge_group(GQMJudge(candidate_orders=2), engine, CANDIDATES)
    shown = [parse_gqm_prompt(p).candidates for p in engine.prompts]
    assert shown == [[CANDIDATES[i] for i in subgroup] for subgroup in subgroup_schedule(8, 4, 2, seed=0)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"candidate_orders": 0}, "candidate_orders must be"),
    ({"candidate_orders": 2, "judge_style": "sqm"}, "candidate_orders applies to the GQM judge"),
])  # fmt: skip
def test_bad_order_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GroupRelativeRewardConfig(judge_model="j", backend="openai", base_url="http://127.0.0.1:1/v1", **kwargs)
    if "judge_style" not in kwargs:
        with pytest.raises(ValueError, match=message):
            GQMJudge(**kwargs)


def test_reward_with_two_orders_is_the_mean_and_the_audit_names_each_order(tmp_path):
    candidates = ["cand-0 q3", "cand-1 q5", "cand-2 q6", "cand-3 q4"]
    audit = tmp_path / "audit.jsonl"
    reward = make_reward(ScriptedEngine(slot_biased_judge), num_generations=4, candidate_orders=2,
                         audit_log_path=str(audit))  # fmt: skip
    rewards, metrics = reward_call(reward, candidates)
    assert rewards == pytest.approx([0.1 * (q + 1.5) for q in (3, 5, 6, 4)])
    assert metrics["grrm_judge/judge_calls"] == 2 and metrics["grrm_judge/unjudged_groups"] == 0
    [record] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [a["candidates"] for a in record["attempts"]] == [[0, 1, 2, 3], [3, 2, 1, 0]]
    for attempt in record["attempts"]:  # the scores each order gave, by letter
        shown = attempt["candidates"]
        assert list(attempt["scores"].values()) == [(3, 5, 6, 4)[c] + 3 - slot for slot, c in enumerate(shown)]


def test_reward_counts_an_order_that_never_parsed_and_scores_from_the_other():
    reward = make_reward(ScriptedEngine(slot_biased_judge_failing_on(LOW)), num_generations=4, candidate_orders=2,
                         max_parse_retries=0)  # fmt: skip
    rewards, metrics = reward_call(reward, LOW)
    assert rewards == pytest.approx([0.1 * (q + 3 - slot) for slot, q in enumerate((3, 7, 1, 5))])
    assert metrics["grrm_judge/failed_subgroups"] == 1 and metrics["grrm_judge/unjudged_groups"] == 0


def test_eval_ranking_with_two_orders_sends_two_prompts_a_group(tmp_path):
    texts = ["a" * length for length in (3, 1, 4)]
    rc, prompts, result = eval_ranking_one_group(tmp_path, texts, "--candidate_orders", "2")
    assert rc == 0 and len(prompts) == 2
    shown = [parse_gqm_prompt(prompt).candidates for prompt in prompts]
    assert sorted(shown) == sorted([texts, texts[::-1]])  # sent side by side: in either order
    assert result["metrics"]["overall"]["accuracy"] == 1.0 and result["judge"]["candidate_orders"] == 2

"""GroupRelativeRewardFunction against the local OpenAI-compatible judge server (exact expectations)."""

import json
import pickle
import threading

import pytest

from trl_grrm import GroupRelativeRewardConfig, GroupRelativeRewardFunction
from trl_grrm.formats.gqm import parse_gqm_prompt
from trl_grrm.testing.judge_server import JudgeServer, length_score

from conftest import dead_url


@pytest.fixture
def server(tmp_path):
    with JudgeServer(request_log=tmp_path / "requests.jsonl") as running:
        yield running


def call(reward, groups, source="Hello.", src_lang="en", trg_lang="de", completion_ids=None):
    """Call the reward function exactly as TRL does: flat lists, one entry per completion, all by keyword."""
    completions, sources = [], []
    for index, group in enumerate(groups):
        completions.extend(group)
        sources.extend([f"{source} #{index}"] * len(group))
    metrics = {}
    rewards = reward(
        prompts=[f"prompt for {s}" for s in sources],
        completions=completions,
        completion_ids=completion_ids or [[0] * 5 for _ in completions],
        src_text=sources,
        src_lang=[src_lang] * len(completions),
        trg_lang=[trg_lang] * len(completions),
        trainer_state=None,
        log_metric=lambda name, value: metrics.__setitem__(name, value),
        log_extra=lambda *a: None,
    )
    return rewards, metrics


def make(server, **overrides):
    settings = dict(judge_model="judge", backend="openai", base_url=server.base_url, extractor="full",
                    num_generations=4, max_request_retries=0)
    return GroupRelativeRewardFunction(**{**settings, **overrides})


def test_rewards_follow_the_judges_scores(server):
    reward = make(server)
    groups = [["Hallo.", "Hallo Welt, wie geht es?", "Guten Tag.", "Servus"], ["a", "bb", "ccc", "dddd"]]
    rewards, metrics = call(reward, groups)
    expected = [length_score("", text) * 0.1 for group in groups for text in group]
    assert rewards == pytest.approx(expected)
    assert len(server.requests) == 2  # one call per group
    assert metrics["grrm_judge/groups"] == 2 and metrics["grrm_judge/judge_calls"] == 2
    assert metrics["grrm_judge/parse_failure_rate"] == 0 and metrics["grrm_judge/fallback_completions"] == 0
    assert metrics["grrm_judge/distinct_candidates"] == 4
    assert metrics["grrm_judge/judge_prompt_tokens"] > 0 and metrics["grrm_judge/judge_output_tokens"] > 0
    assert reward.__name__ == "grrm_judge"


def test_duplicates_are_judged_once_and_share_the_score(server):
    reward = make(server)
    rewards, metrics = call(reward, [["Hallo.", "  Hallo. ", "Guten Tag.", "Hallo."]])
    prompt = parse_gqm_prompt(server.requests[0]["prompt"])
    assert prompt.candidates == ["Hallo.", "Guten Tag."]
    hallo, guten_tag = length_score("", "Hallo.") / 10, length_score("", "Guten Tag.") / 10
    assert hallo != guten_tag
    assert rewards == pytest.approx([hallo, hallo, guten_tag, hallo])
    assert metrics["grrm_judge/distinct_candidates"] == 2


def test_invalid_completions_and_too_few_distinct(server):
    reward = make(server, extractor="codeblock", invalid_completion_reward=-1.0, unjudged_reward=None)
    block = "reasoning\n```\n{}\n```"
    groups = [
        [block.format("Hallo."), "no block", block.format("Servus!"), "```unterminated"],
        [block.format("Same."), block.format("Same."), "nothing", block.format("Same.")],
    ]
    rewards, metrics = call(reward, groups)
    assert rewards[:4] == pytest.approx([length_score("", "Hallo.") / 10, -1.0, length_score("", "Servus!") / 10, -1.0])
    assert rewards[4:] == [None, None, -1.0, None]
    assert len(server.requests) == 1
    assert metrics["grrm_judge/invalid_completions"] == 3
    assert metrics["grrm_judge/unjudged/too_few_distinct"] == 1
    assert metrics["grrm_judge/fallback_completions"] == 6


def test_unparsable_answers_are_retried_hotter(server):
    server.garbage_below_temperature = 0.5  # greedy answers are garbage, sampled ones are fine
    reward = make(server, max_parse_retries=2, retry_temperature=0.9)
    rewards, metrics = call(reward, [["a", "bb", "ccc", "dddd"], ["e", "ff", "g", "hh"]])
    assert [r["temperature"] for r in server.requests] == [0.0, 0.0, 0.9, 0.9]
    assert rewards == pytest.approx([length_score("", t) / 10 for t in ["a", "bb", "ccc", "dddd", "e", "ff", "g", "hh"]])
    assert metrics["grrm_judge/retries"] == 2 and metrics["grrm_judge/parse_failure_rate"] == 0.5


def test_parse_failures_after_all_retries_fall_back(server):
    server.garbage_below_temperature = 2.0
    reward = make(server, max_parse_retries=1, unjudged_reward=0.25)
    rewards, metrics = call(reward, [["a", "bb", "ccc", "dddd"]])
    assert rewards == [0.25] * 4
    assert len(server.requests) == 2
    assert metrics["grrm_judge/unjudged/parse_failed"] == 1 and metrics["grrm_judge/parse_failure_rate"] == 1.0


def test_prompt_too_long_from_the_server_falls_back(server):
    server.max_prompt_chars = 600
    reward = make(server, unjudged_reward=-0.5)
    long_group = ["x" * 200, "y" * 200, "z" * 200, "w" * 200]
    rewards, metrics = call(reward, [long_group, ["a", "b", "cc", "d"]])
    assert rewards[:4] == [-0.5] * 4
    assert rewards[4:] == pytest.approx([0.1, 0.1, 0.2, 0.1])
    assert metrics["grrm_judge/unjudged/prompt_too_long"] == 1


def test_prompt_limit_with_a_local_tokenizer(server, tiny_model_dir):
    reward = make(server, judge_tokenizer=tiny_model_dir, max_judge_prompt_tokens=250, unjudged_reward=-0.5)
    rewards, metrics = call(reward, [["long " * 80, "a", "b", "c"], ["a", "b", "cc", "d"]])
    assert rewards[:4] == [-0.5] * 4 and metrics["grrm_judge/unjudged/prompt_too_long"] == 1
    assert len(server.requests) == 1  # the long prompt never reached the server


def test_server_down_falls_back_without_hanging():
    reward = GroupRelativeRewardFunction(judge_model="judge", backend="openai", base_url=dead_url(), extractor="full",
                                         num_generations=2, max_request_retries=1, unjudged_reward=-0.3,
                                         request_backoff_seconds=0.01)
    rewards, metrics = call(reward, [["a", "b"]])
    assert rewards == [-0.3, -0.3]
    assert metrics["grrm_judge/unjudged/judge_unavailable"] == 1
    assert metrics["grrm_judge/request_retries"] == 1  # bounded: exactly max_request_retries, then the fallback


def test_server_down_can_raise():
    reward = GroupRelativeRewardFunction(judge_model="judge", backend="openai", base_url=dead_url(), extractor="full",
                                         num_generations=2, max_request_retries=0, on_judge_unavailable="raise")
    with pytest.raises(RuntimeError, match="judge engine unavailable"):
        call(reward, [["a", "b"]])


def test_several_base_urls_share_the_load_and_cover_a_dead_one(tmp_path):
    with JudgeServer() as first, JudgeServer() as second:
        reward = GroupRelativeRewardFunction(
            judge_model="judge", backend="openai", base_url=[first.base_url, dead_url(), second.base_url],
            extractor="full", num_generations=2, max_request_retries=2, request_backoff_seconds=0.01,
        )
        groups = [[f"a{i}", f"bb{i}"] for i in range(9)]
        rewards, metrics = call(reward, groups)
    assert None not in rewards and metrics["grrm_judge/unjudged_groups"] == 0
    assert len(first.requests) > 0 and len(second.requests) > 0
    assert len(first.requests) + len(second.requests) == 9


def test_requests_are_concurrent_up_to_max_concurrency(server):
    # The server counts the judge calls in flight. Each call waits (bounded) until `limit` calls are in flight at
    # once: a client that sent one request at a time would leave the peak at 1, one that ignored the limit would
    # push it above `limit`. No sleeps and no wall-clock assertion.
    limit, groups = 3, [[f"a{i}", f"bb{i}"] for i in range(6)]  # 6 requests: two full waves of 3
    in_flight, peak, changed = [0], [0], threading.Condition()
    judge = server.judge

    def counting_judge(prompt, temperature):
        with changed:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            changed.notify_all()
            changed.wait_for(lambda: in_flight[0] >= limit, timeout=10)
        try:
            return judge(prompt, temperature)
        finally:
            with changed:
                in_flight[0] -= 1

    server.judge = counting_judge
    rewards, metrics = call(make(server, num_generations=2, max_concurrency=limit), groups)
    assert peak[0] == limit
    assert None not in rewards and metrics["grrm_judge/unjudged_groups"] == 0
    assert len(server.requests) == len(groups)


def test_shuffled_candidates_map_back_to_the_right_completion(server):
    reward = make(server, shuffle_candidates=True, seed=3)
    groups = [["a", "bbbbb", "ccc", "dddddddd"] for _ in range(5)]
    rewards, _ = call(reward, groups)
    assert rewards == pytest.approx([length_score("", t) / 10 for g in groups for t in g])
    orders = {tuple(parse_gqm_prompt(r["prompt"]).candidates) for r in server.requests}
    assert len(orders) > 1  # the judge really saw different orders


def test_overlong_penalty_and_paper_preset(server):
    config = GroupRelativeRewardConfig.grrm_paper(judge_model="judge", backend="openai", base_url=server.base_url,
                                                  extractor="full", num_generations=2, max_judge_prompt_tokens=None)
    reward = GroupRelativeRewardFunction(config)
    lengths = [[0] * 1000, [0] * 3072]
    rewards, _ = call(reward, [["abc", "abcd"]], completion_ids=lengths)
    assert rewards == pytest.approx([3 * 0.01, 4 * 0.01 - 0.02])
    paper = GroupRelativeRewardConfig.grrm_paper()
    assert (paper.invalid_completion_reward, paper.extractor) == (-0.04, "codeblock_strict")
    assert paper.unjudged_reward == pytest.approx(-0.04 * 0.01) and paper.unjudged_overlong_penalty is True


def test_ranking_mismatch_can_fail(server):
    server.judge = lambda prompt, t: "x\n### Final Ranking:\nB > A\n### Scores:\nA: 8, B: 3\n"
    counted, metrics = call(make(server, num_generations=2), [["a", "b"]])
    assert counted == pytest.approx([0.8, 0.3]) and metrics["grrm_judge/ranking_disagreement_rate"] == 1.0
    failed, metrics = call(make(server, num_generations=2, ranking_mismatch="fail", max_parse_retries=0,
                                unjudged_reward=0.0), [["a", "b"]])
    assert failed == [0.0, 0.0] and metrics["grrm_judge/unjudged/parse_failed"] == 1


def test_missing_column_is_a_clear_error(server):
    reward = make(server, num_generations=2)
    with pytest.raises(ValueError, match="needs the dataset column 'src_text'.*columns \\['lang'\\]"):
        reward(prompts=["p", "p"], completions=["a", "b"], completion_ids=[[1], [1]], lang=["x", "x"])


def test_groups_must_share_their_prompt(server):
    reward = make(server, num_generations=2)
    with pytest.raises(ValueError, match="should belong to one group"):
        reward(prompts=["p1", "p2"], completions=["a", "b"], src_text=["s", "s"], src_lang=["en"] * 2,
               trg_lang=["de"] * 2)


def test_without_trainer_or_num_generations_it_says_what_to_do(server):
    reward = make(server, num_generations=None)
    with pytest.raises(RuntimeError, match="pass num_generations"):
        call(reward, [["a", "b"]])


def test_audit_log_records_every_request_and_response(server, tmp_path):
    path = tmp_path / "audit" / "judge.jsonl"
    reward = make(server, num_generations=2, audit_log_path=str(path))
    call(reward, [["a", "bb"], ["c", "c"]])
    call(reward, [["e", "ff"]])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 1, 2]
    assert records[0]["attempts"][0]["request"][0]["content"] == server.requests[0]["prompt"]
    assert records[0]["attempts"][0]["scores"] == {"A": 1, "B": 2}
    assert records[1]["unjudged_reason"] == "too_few_distinct" and records[1]["attempts"] == []


def test_reward_function_pickles_without_its_engine(server):
    reward = make(server)
    reward.engine  # start it
    clone = pickle.loads(pickle.dumps(reward))
    assert clone._engine is None and clone.config == reward.config


def test_config_validation():
    with pytest.raises(ValueError, match=r"needs judge\.base_url"):
        GroupRelativeRewardConfig(judge_model="j", backend="openai")
    with pytest.raises(ValueError, match="Unknown translation extractor"):
        GroupRelativeRewardConfig(judge_model="j", extractor="xml")
    with pytest.raises(ValueError, match="backend must be"):
        GroupRelativeRewardConfig(judge_model="j", backend="sglang")


# -- engine outcomes the local server cannot produce on demand: a scripted in-memory engine -----------------------


def scripted(answer, **overrides):
    from trl_grrm.testing.scripted_engine import ScriptedEngine

    engine = ScriptedEngine(answer)
    settings = dict(judge_model="judge", backend="openai", base_url="http://127.0.0.1:9/v1", extractor="full",
                    num_generations=2, max_parse_retries=1, unjudged_reward=-0.5)
    return GroupRelativeRewardFunction(engine=engine, **{**settings, **overrides}), engine


def test_a_truncated_answer_is_not_a_judgment_and_is_asked_again(tmp_path):
    from trl_grrm.engines import JudgeOutput

    # The cut answer still parses ("B: 10" cut to "B: 1"), so using it would give a wrong reward.
    def answer(prompt, attempt, sampling):
        if attempt == 0:
            return JudgeOutput(text="A: 8, B: 1", error="truncated", finish_reason="length")
        return "### Scores:\nA: 8, B: 10"

    reward, engine = scripted(answer, audit_log_path=str(tmp_path / "audit.jsonl"))
    rewards, metrics = call(reward, [["a", "b"]])
    assert rewards == pytest.approx([0.8, 1.0])
    assert len(engine.prompts) == 2 and [s.temperature for s in engine.samplings] == [0.0, 1.0]
    assert metrics["grrm_judge/truncated_rate"] == 0.5  # 1 of the 2 answers received
    assert metrics["grrm_judge/parse_failure_rate"] == 0.0 and metrics["grrm_judge/unjudged_groups"] == 0
    [record] = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    first, second = record["attempts"]
    assert (first["error"], first["truncated"], first["finish_reason"]) == ("truncated", True, "length")
    assert "scores" not in first and second["scores"] == {"A": 8, "B": 10}


def test_answers_still_truncated_after_the_retries_are_counted_as_truncated(tmp_path):
    from trl_grrm.engines import JudgeOutput

    reward, engine = scripted(lambda p, a, s: JudgeOutput(text="A: 8, B: 1", error="truncated", finish_reason="length"),
                              max_parse_retries=2, audit_log_path=str(tmp_path / "audit.jsonl"))
    rewards, metrics = call(reward, [["a", "b"]])
    assert rewards == [-0.5, -0.5]
    assert len(engine.prompts) == 3
    assert metrics["grrm_judge/unjudged/truncated"] == 1 and metrics["grrm_judge/unjudged/parse_failed"] == 0
    assert metrics["grrm_judge/truncated_rate"] == 1.0 and metrics["grrm_judge/unjudged_groups"] == 1
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert records[0]["unjudged_reason"] == "truncated" and all(a["truncated"] for a in records[0]["attempts"])


def test_transport_retries_are_summed_into_a_metric():
    from trl_grrm.engines import JudgeOutput

    def answer(prompt, attempt, sampling):
        retries = 2 if "Hallo" in prompt else 1
        return JudgeOutput(text="### Scores:\nA: 1, B: 2", request_retries=retries, finish_reason="stop")

    reward, _ = scripted(answer)
    _, metrics = call(reward, [["Hallo", "Servus"], ["x", "y"], ["u", "v"]])
    assert metrics["grrm_judge/request_retries"] == 2 + 1 + 1


def test_unavailable_uses_the_shared_vocabulary_and_keeps_the_old_metric_name(tmp_path):
    from trl_grrm.engines import JudgeOutput

    reward, _ = scripted(lambda p, a, s: JudgeOutput(text=None, error="unavailable", detail="503"),
                         audit_log_path=str(tmp_path / "audit.jsonl"))
    rewards, metrics = call(reward, [["a", "b"]])
    assert rewards == [-0.5, -0.5]
    assert metrics["grrm_judge/unjudged/unavailable"] == 1 and metrics["grrm_judge/unjudged/judge_unavailable"] == 1
    [record] = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert record["unjudged_reason"] == "unavailable"


def test_a_configuration_error_stops_at_once_with_the_engines_message():
    from trl_grrm.engines import JudgeConfigurationError

    message = "judge at http://127.0.0.1:9/v1 has no model 'grrm'; it serves ['judge']"

    def refuse(prompt, attempt, sampling):
        raise JudgeConfigurationError(message)

    reward, engine = scripted(refuse, on_judge_unavailable="fallback")
    with pytest.raises(JudgeConfigurationError) as raised:
        call(reward, [["a", "b"], ["c", "d"]])
    assert str(raised.value) == message
    assert engine.calls == 1  # no re-ask, no fallback


def test_any_other_judging_error_keeps_its_message():
    def broken(prompt, attempt, sampling):
        raise KeyError("choices")

    reward, _ = scripted(broken)
    with pytest.raises(RuntimeError, match=r"GRRM judging failed: process 0: KeyError: 'choices'"):
        call(reward, [["a", "b"]])


def test_answers_that_revise_their_scores_are_counted(tmp_path):
    revised = "### Scores:\nA: 3, B: 5\nOn reflection B is worse.\nA: 6, B: 2"  # the parser keeps the last line
    reward, _ = scripted(lambda p, a, s: revised if "Hallo" in p else "### Scores:\nA: 1, B: 2",
                         audit_log_path=str(tmp_path / "audit.jsonl"))
    rewards, metrics = call(reward, [["Hallo", "Servus"], ["x", "y"]])
    assert rewards == pytest.approx([0.6, 0.2, 0.1, 0.2])
    assert metrics["grrm_judge/revised_scores_rate"] == 0.5
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert records[0]["attempts"][0]["revised_scores"] is True and "revised_scores" not in records[1]["attempts"][0]

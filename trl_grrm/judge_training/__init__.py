"""Training the GRRM judge itself: SFT cold start and RLVR on ranking rewards."""

from .rewards import (
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

__all__ = [
    "INVALID_REASONS",
    "InvalidJudgeAnswer",
    "RankingReward",
    "RankingRewardBreakdown",
    "RankingRewardConfig",
    "anchor_agreement",
    "parse_ground_truth",
    "ranking_reward",
    "relation_agreement",
    "summarize_breakdowns",
    "validate_judge_answer",
]

"""A miniature GRRM setting that trains on a CPU in minutes: a synthetic translation task with an oracle
(:mod:`~trl_grrm.mini.task`), oracle-labelled judge data in the package's ranking-dataset layout
(:mod:`~trl_grrm.mini.judge_data`), and a tokenizer plus tiny Qwen2 models sized for it (:mod:`~trl_grrm.mini.models`).

Example:
    >>> from trl_grrm.data.judge_builders import build_judge_sft_dataset
    >>> ranking = build_ranking_dataset(8, seed=0)
    >>> rows = build_judge_sft_dataset(ranking)  # GRRM prompts and answers, ready for TRL's SFTTrainer
    >>> rows[0]["messages"][0]["content"].startswith("Given a source text in Aklan")
    True
"""

from .judge_data import (
    Teacher,
    as_taught,
    blind_spot_pairs,
    build_ranking_dataset,
    build_sqm_sft_dataset,
    group_analysis,
)
from .models import MODEL_SIZES, build_mini_model, build_mini_tokenizer
from .task import (
    SOURCE_LANGUAGE,
    TARGET_LANGUAGE,
    GrammarSettings,
    oracle_errors,
    oracle_score,
    perturb,
    sample_source,
    translate,
)

__all__ = [
    "MODEL_SIZES",
    "SOURCE_LANGUAGE",
    "TARGET_LANGUAGE",
    "GrammarSettings",
    "Teacher",
    "as_taught",
    "blind_spot_pairs",
    "build_mini_model",
    "build_mini_tokenizer",
    "build_ranking_dataset",
    "build_sqm_sft_dataset",
    "group_analysis",
    "oracle_errors",
    "oracle_score",
    "perturb",
    "sample_source",
    "translate",
]

"""JudgeRLVRTrainer: train a GRRM judge with GSPO on its verifiable ranking reward."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from ..judge_training.rewards import RankingReward
from .gspo_trainer import GSPOTrainer
from .rlvr_config import JudgeRLVRConfig


def _column_names(dataset: Any) -> list[str] | None:
    if dataset is None:
        return None
    if isinstance(dataset, dict):  # several eval sets by name
        names = [_column_names(d) for d in dataset.values()]
        return None if any(n is None for n in names) else sorted(set.intersection(*map(set, names)))
    return getattr(dataset, "column_names", None)  # None for some iterable datasets: nothing to check


class JudgeRLVRTrainer(GSPOTrainer):
    """RLVR for a generative judge: GSPO on judge answers, rewarded by how well they rank each group.

    ``train_dataset`` holds one judge prompt per row (``prompt``: a user turn built with the GQM prompt) and the
    group's true scores (``ground_truth``: JSON ``{"A": 8, "B": 3, ...}`` for the letters as shown), as built by
    :func:`trl_grrm.data.build_judge_rlvr_dataset`. Without ``reward_funcs`` the trainer optimises
    :class:`~trl_grrm.judge_training.RankingReward` configured by ``args.ranking_reward``; its breakdown is logged
    as ``grrm_ranking_reward/valid_rate``, ``/rank``, ``/gap``, ``/invalid/<reason>``. Everything else (vLLM
    generation, PEFT, DeepSpeed, evaluation) is :class:`GSPOTrainer`'s, hence ``trl.GRPOTrainer``'s.

    Example:
        >>> from trl_grrm.data import build_judge_rlvr_dataset
        >>> trainer = JudgeRLVRTrainer(
        ...     model="path/to/sft-judge",
        ...     args=JudgeRLVRConfig(output_dir="judge-rlvr", per_device_train_batch_size=8),
        ...     train_dataset=build_judge_rlvr_dataset(ranking_dataset),
        ... )  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    _tag_names = ["trl", "grpo", "gspo", "trl-grrm", "grrm-judge", "rlvr"]

    def __init__(
        self,
        model: str | PreTrainedModel,
        reward_funcs: Any = None,
        args: JudgeRLVRConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        **kwargs: Any,
    ) -> None:
        """Same arguments as :class:`GSPOTrainer`; ``reward_funcs`` is optional and ``args`` a
        :class:`JudgeRLVRConfig`."""
        if args is None:
            model_name = model if isinstance(model, str) else model.config._name_or_path
            args = JudgeRLVRConfig(f"{str(model_name).split('/')[-1]}-judge-RLVR")
        elif not isinstance(args, JudgeRLVRConfig):
            raise TypeError(
                f"JudgeRLVRTrainer needs a JudgeRLVRConfig (the judge-RLVR defaults: sft_coef=0, 8 rollouts, cosine "
                f"to 0.2, ranking_reward); got {type(args).__name__}. Build JudgeRLVRConfig(...) with the same "
                "arguments."
            )
        if reward_funcs is None:
            reward_funcs = [RankingReward(args.ranking_reward_config())]
            needed = ("prompt", "ground_truth")
            for split, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
                columns = _column_names(dataset)
                missing = [c for c in needed if columns is not None and c not in columns]
                if missing:
                    raise ValueError(
                        f"{split} lacks column(s) {missing} (it has {columns}); the default RankingReward needs each "
                        "row's judge prompt and its group's true scores. Build the dataset with "
                        "trl_grrm.data.build_judge_rlvr_dataset(ranking_dataset)."
                    )
        super().__init__(
            model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
            **kwargs,
        )

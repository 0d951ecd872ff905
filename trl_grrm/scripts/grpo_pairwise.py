"""``trl-grrm grpo-pairwise``: GRPO on general chat data with a pairwise GRAM-style judge (:class:`trl_grrm.rewards.PairwiseRewardFunction`).

The data has a ``prompt`` column (a string or a list of chat messages); the judge compares the completions of each
group two at a time (``--pairwise_scheme round_robin | bradley_terry | reference``) and each completion's reward is
its win probability in [0, 1]::

    # judge: a `vllm serve` of a GRAM checkpoint (verdicts from its top_logprobs)
    trl-grrm grpo-pairwise --model_name_or_path Qwen/Qwen2.5-1.5B-Instruct \\
        --dataset_name trl-lib/ultrafeedback-prompt --judge.model gram --judge.base_url http://judge-host:8000/v1 \\
        --pairwise_scheme bradley_terry --num_generations 8 --output_dir out

    # judge in-process (vLLM) instead:  --judge.backend vllm --judge.model NiuTrans/GRAM-Qwen3-8B-RewardModel
    # a reasoning judge (GRAM-R²):       --judge_type gram_r2 --judge.max_tokens 2048
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trl import GRPOConfig, GRPOTrainer, ModelConfig, ScriptArguments, get_peft_config  # noqa: E402

from trl_grrm.distributed import end_training, exit_process  # noqa: E402
from trl_grrm.engines import JudgeConfig  # noqa: E402
from trl_grrm.rewards import PairwiseRewardConfig, PairwiseRewardFunction  # noqa: E402
from trl_grrm.scripts.parsing import GRRMParser  # noqa: E402

HELP = "GRPO on chat prompts with a pairwise GRAM-style judge reward."


@dataclass
class PairwiseScriptArguments(ScriptArguments):
    """``dataset_name``: a hub id, or a local .jsonl/.json/.parquet/.csv file with a ``prompt`` column."""

    judge: dict | str | None = field(default=None, metadata={"help": "The judge (trl_grrm.engines.JudgeConfig): a `judge:` mapping in the YAML or --judge.<option> flags (--judge.model gram --judge.base_url http://judge-host:8000/v1). Backend unset: openai if judge.base_url is set, else vllm."})
    judge_type: str = field(default="gram", metadata={"help": "gram (verdict log-probabilities) or gram_r2 (reasoning judge)."})
    pairwise_scheme: str = field(default="round_robin", metadata={"help": "round_robin, bradley_terry or reference."})
    reference_column: str | None = field(default=None, metadata={"help": "reference scheme: the column with a reference response (default: a group member)."})
    reward_kwargs: dict | str | None = field(default=None, metadata={"help": "Other PairwiseRewardConfig fields, as a mapping or JSON string. Applied last."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})

    def __post_init__(self) -> None:
        self.judge = JudgeConfig.from_value(self.judge)
        if isinstance(self.reward_kwargs, str):
            self.reward_kwargs = json.loads(self.reward_kwargs) if self.reward_kwargs.strip() else None


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> GRRMParser:
    """``TrlParser((PairwiseScriptArguments, GRPOConfig, ModelConfig))`` with the nested ``judge`` options; ``use_cpu``
    defaults to true without a GPU."""
    import torch

    dataclass_types = (PairwiseScriptArguments, GRPOConfig, ModelConfig)
    if subparsers is not None:
        parser = subparsers.add_parser("grpo-pairwise", help=HELP, dataclass_types=dataclass_types)
    else:
        parser = GRRMParser(dataclass_types, prog=prog)
    if not torch.cuda.is_available():
        parser.set_defaults(use_cpu=True)
    return parser


def load_prompts(script_args: PairwiseScriptArguments):
    """The training split, from a local file or the hub; it must have a ``prompt`` column."""
    from datasets import load_dataset

    name = script_args.dataset_name
    suffix = os.path.splitext(name)[1].lstrip(".")
    if os.path.isfile(name):
        dataset = load_dataset({"jsonl": "json"}.get(suffix, suffix), data_files=name, split="train")
    else:
        dataset = load_dataset(name, script_args.dataset_config, split=script_args.dataset_train_split)
    if "prompt" not in dataset.column_names:
        raise ValueError(f"{name} has no 'prompt' column (columns: {dataset.column_names})")
    if script_args.max_train_samples is not None:
        dataset = dataset.select(range(min(script_args.max_train_samples, len(dataset))))
    return dataset


def judge_config(script_args: PairwiseScriptArguments, training_args: GRPOConfig) -> PairwiseRewardConfig:
    return PairwiseRewardConfig(
        judge=script_args.judge,
        num_generations=training_args.num_generations,
        judge_type=script_args.judge_type,
        pairwise_scheme=script_args.pairwise_scheme,
        reference_column=script_args.reference_column,
        audit_log_path=os.path.join(training_args.output_dir, "judge_audit.jsonl"),
        **(script_args.reward_kwargs or {}),
    )


def main(script_args: PairwiseScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> int:
    """Load the prompts, build the pairwise reward and train with ``trl.GRPOTrainer``."""
    if model_args.model_name_or_path is None:
        raise SystemExit("grpo-pairwise needs --model_name_or_path")
    if script_args.dataset_name is None or script_args.judge.model is None:
        raise SystemExit("grpo-pairwise needs --dataset_name (a `prompt` column) and --judge.model")
    dataset = load_prompts(script_args)
    reward = PairwiseRewardFunction(judge_config(script_args, training_args))
    trainer = GRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.accelerator.print(
        f"[grpo_pairwise] {len(dataset)} prompts, {script_args.judge_type} judge, scheme {script_args.pairwise_scheme!r}"
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # OUTPUT_DIR/trainer_state.json: every logged metric, step by step
    if trainer.accelerator.is_main_process:
        print(f"[grpo_pairwise] done. Model: {os.path.abspath(training_args.output_dir)}")
    end_training(trainer)
    return 0


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (and its ``--config`` YAML) and train."""
    return main(*make_parser(prog=prog).parse_args_and_config(list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    exit_process(run())

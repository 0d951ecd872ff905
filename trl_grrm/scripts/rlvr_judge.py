# Copyright the trl-grrm authors. Licensed under the Apache License, Version 2.0.
"""``trl-grrm rlvr-judge``: stage 2 of GRRM judge training: RLVR with GSPO on the verifiable ranking reward (``JudgeRLVRTrainer``).

Reads a ranking dataset (columns ``src_text``, ``src_lang``, ``trg_lang``, ``mt_texts``, ``scores``), builds the
RLVR prompts with :func:`trl_grrm.data.build_judge_rlvr_dataset` (each group in its stored order, plus shuffled
orders and proper subgroups: with the paper's ``4`` and ``4`` a group of 4 gives 13 to 25 prompts, about 18 on
average, a group of 3 gives 11 and a pair 2), drops prompts longer than ``max_prompt_length`` tokens, and trains the SFT judge with
:class:`trl_grrm.trainers.JudgeRLVRTrainer`: 8 answers per prompt, each rewarded by
:class:`trl_grrm.judge_training.RankingReward` (ranking agreement + score-gap agreement, 0 for a malformed
answer), advantages centred on the group mean, GSPO loss.

Usage:

    # 2 nodes x 8 GPUs (run on each node with its --machine_rank), the paper's settings:
    accelerate launch --config_file accelerate_configs/zero3_multinode.yaml \\
        --machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR \\
        recipes/rlvr_grrm.py --config recipes/configs/rlvr_grrm_full.yaml --model_name_or_path <sft-judge-dir>

    # LoRA on top of the (merged) SFT judge:
    accelerate launch ... recipes/rlvr_grrm.py --config recipes/configs/rlvr_grrm_lora.yaml

The reward can be changed from the YAML (``ranking_reward:`` section, e.g. ``ties: half`` or
``weight_anchor: 0.5``) or the command line (``--ranking_reward '{"ties": "half"}'``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import ModelConfig, get_peft_config

from trl_grrm.data import build_judge_rlvr_dataset
from trl_grrm.evaluation.ranking import load_ranking_dataset
from trl_grrm.distributed import end_training, exit_process
from trl_grrm.scripts.parsing import GRRMParser, RankingDataScriptArguments, check_expected_processes
from trl_grrm.trainers import JudgeRLVRConfig, JudgeRLVRTrainer


@dataclass
class JudgeRLVRScriptArguments(RankingDataScriptArguments):
    """:class:`~trl_grrm.scripts.parsing.RankingDataScriptArguments` plus the judge RLVR recipe's own."""

    shuffle_augment: int = field(
        default=4, metadata={"help": "Extra candidate orders per (sub)group in the training set. Paper: 4."}
    )
    subgroup_augment: int = field(
        default=4, metadata={"help": "Proper subgroups (2..n-1 candidates) drawn per group for training. Paper: 4."}
    )
    augment_seed: int = field(default=0, metadata={"help": "Seed of the shuffle and subgroup draws."})
    eval_shuffle_augment: int = field(default=0, metadata={"help": "shuffle_augment of the eval set (paper: 0)."})
    eval_subgroup_augment: int = field(default=0, metadata={"help": "subgroup_augment of the eval set (paper: 0)."})
    max_prompt_length: int | None = field(
        default=1600,
        metadata={"help": "Drop judge prompts longer than this many tokens (after the chat template); the paper's "
                  "RLVR used 1600. None keeps everything."},
    )  # fmt: skip


HELP = "RLVR of a GRRM judge with GSPO and the ranking reward (stage 2 of judge training)."


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> GRRMParser:
    """The recipe's ``TrlParser``: (script arguments, ``JudgeRLVRConfig``, ``ModelConfig``)."""
    dataclass_types = (JudgeRLVRScriptArguments, JudgeRLVRConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("rlvr-judge", help=HELP, dataclass_types=dataclass_types)
    return GRRMParser(dataclass_types, nested={}, prog=prog)


def batch_arithmetic(training_args, num_processes: int) -> dict[str, int]:
    """How a config's batch settings become rollout and optimiser batches on ``num_processes`` processes.

    ``generation_batch_size`` completions (``prompts_per_generation`` prompts x ``num_generations``) are sampled
    at once and consumed by ``optimizer_steps_per_generation`` optimiser steps of ``completions_per_step``.
    """
    per_micro_step = training_args.per_device_train_batch_size * num_processes
    steps_per_generation = training_args.steps_per_generation
    if steps_per_generation is None:  # TRL derives it from generation_batch_size, or GA, in __post_init__
        if training_args.generation_batch_size is not None:
            steps_per_generation = training_args.generation_batch_size // per_micro_step
        else:
            steps_per_generation = training_args.gradient_accumulation_steps
    generation_batch = per_micro_step * steps_per_generation
    per_step = per_micro_step * training_args.gradient_accumulation_steps
    return {
        "num_processes": num_processes,
        "per_device_train_batch_size": training_args.per_device_train_batch_size,
        "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
        "steps_per_generation": steps_per_generation,
        "num_generations": training_args.num_generations,
        "generation_batch_size": generation_batch,
        "prompts_per_generation": generation_batch // training_args.num_generations,
        "completions_per_step": per_step,
        "prompts_per_step": per_step // training_args.num_generations,
        "optimizer_steps_per_generation": steps_per_generation // training_args.gradient_accumulation_steps,
        "completions_per_device_per_generation": training_args.per_device_train_batch_size * steps_per_generation,
    }


def check_batch_arithmetic(training_args, num_processes: int) -> dict[str, int]:
    """Raise ``ValueError`` unless rollout and optimiser batches fit together; return :func:`batch_arithmetic`.

    Required: whole groups per rollout batch (as TRL checks) and a whole number of optimiser steps per rollout
    batch (``steps_per_generation`` a multiple of ``gradient_accumulation_steps``, the paper's 512 / 128 shape).
    Groups split across processes are allowed: the ranking reward scores each answer alone and TRL gathers the
    rewards before computing advantages (``completions_per_device_per_generation`` shows whether they are split).
    """
    numbers = batch_arithmetic(training_args, num_processes)
    problems = []
    if numbers["generation_batch_size"] % numbers["num_generations"]:
        problems.append("generation_batch_size must be a multiple of num_generations (whole groups per rollout)")
    if numbers["steps_per_generation"] % numbers["gradient_accumulation_steps"]:
        problems.append("steps_per_generation must be a multiple of gradient_accumulation_steps (whole optimiser "
                        "steps per rollout batch)")  # fmt: skip
    if problems:
        raise ValueError(f"batch settings {numbers} do not fit: " + "; ".join(problems))
    return numbers


def build_split(name, split, config, limit, shuffle_augment, subgroup_augment, seed, tokenizer, max_prompt_length):
    """Load a ranking split, build its RLVR prompts and drop the over-long ones."""
    ranking = load_ranking_dataset(name, split=split, config=config)
    if limit is not None:
        ranking = ranking.select(range(min(limit, len(ranking))))
    prompts = build_judge_rlvr_dataset(
        ranking, shuffle_augment=shuffle_augment, subgroup_augment=subgroup_augment, seed=seed
    )
    if max_prompt_length is not None:

        def fits(row) -> bool:
            ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"]
            return len(ids) <= max_prompt_length

        prompts = prompts.filter(fits)
    if not len(prompts):
        raise SystemExit(f"{name} ({split}) gave no RLVR prompt (all longer than max_prompt_length?)")
    return ranking, prompts


def main(script_args, training_args, model_args) -> None:
    if not script_args.dataset_name:
        raise SystemExit("--dataset_name is required (a ranking dataset: file, folder or hub id)")
    check_expected_processes(script_args.expected_num_processes, training_args.world_size, training_args,
                             rollouts=True)
    check_batch_arithmetic(training_args, training_args.world_size)
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = model_init_kwargs

    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )  # fmt: skip
    ranking, train_dataset = build_split(
        script_args.dataset_name, script_args.dataset_train_split, script_args.dataset_config,
        script_args.max_train_samples, script_args.shuffle_augment, script_args.subgroup_augment,
        script_args.augment_seed, tokenizer, script_args.max_prompt_length,
    )  # fmt: skip
    eval_dataset = None
    if training_args.eval_strategy != "no":
        _, eval_dataset = build_split(
            script_args.eval_dataset_name or script_args.dataset_name, script_args.dataset_test_split,
            None if script_args.eval_dataset_name else script_args.dataset_config, script_args.max_eval_samples,
            script_args.eval_shuffle_augment, script_args.eval_subgroup_augment, script_args.augment_seed,
            tokenizer, script_args.max_prompt_length,
        )  # fmt: skip

    trainer = JudgeRLVRTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    numbers = batch_arithmetic(training_args, trainer.accelerator.num_processes)
    trainer.accelerator.print(
        f"judge RLVR: {len(ranking)} ranking rows -> {len(train_dataset)} prompts; batches {numbers}; "
        f"reward {trainer.reward_funcs[0]!r}"
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"judge saved to {training_args.output_dir}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    end_training(trainer)


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (and its ``--config`` YAML) and train."""
    main(*make_parser(prog=prog).parse_args_and_config(list(sys.argv[1:] if argv is None else argv)))
    return 0


if __name__ == "__main__":
    exit_process(run())

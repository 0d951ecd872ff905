"""The embedded default of ``trl-grrm grpo-mt``: what a run with no ``--config`` and no model trains.

With nothing named (no model, judge or dataset), the miniature demo (:mod:`trl_grrm.mini.demo`): the shipped tiny
policy trained against the shipped tiny GRRM judge through in-process vLLM, with its held-out oracle score before
and after. With a judge or dataset named but no model (what the tests do with the stand-in judge), a tiny offline
policy (built with
:func:`trl_grrm.testing.build_tiny_chat_model`, then given a short SFT cold start on the bundled MT sample so that it
writes the analysis + code block format; cached under ``$TRL_GRRM_CACHE_DIR`` or ``~/.cache/trl_grrm``), CPU-sized
trainer settings (:data:`EMBEDDED_TRAINING_DEFAULTS`), and the chrF stand-in judge
(:mod:`trl_grrm.testing.standin_judge`), which the script starts when no judge is named.

The script calls one function, :func:`embedded_default_setup`, before it parses its arguments; replacing the
embedded default (e.g. by a trained miniature policy and judge) means changing this module only.

Example:
    >>> argv, policy = embedded_default_setup(["--model_name_or_path", "Qwen/Qwen2.5-0.5B-Instruct"])
    >>> argv, policy  # a model is named: nothing to build
    (['--model_name_or_path', 'Qwen/Qwen2.5-0.5B-Instruct'], None)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .data.mt_builders import BUNDLED_SAMPLE

#: Environment variable naming the cache folder of the tiny default policy.
CACHE_ENV = "TRL_GRRM_CACHE_DIR"
#: Default of ``policy_warmup_steps``: SFT cold-start steps of the tiny policy.
DEFAULT_WARMUP_STEPS = 300

#: Trainer settings of a run without ``--config`` (the command line still overrides each): 4 prompts x 4 samples
#: per generation, reused for 2 optimiser steps, 12 steps on the tiny policy.
EMBEDDED_TRAINING_DEFAULTS: dict[str, Any] = dict(
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


def embedded_default_setup(argv: list[str]) -> tuple[list[str], str | None]:
    """Prepare the embedded default for a ``grpo-mt`` command line: when neither ``argv`` nor its ``--config`` names
    ``model_name_or_path``, build (once, cached) the tiny default policy and add ``--model_name_or_path`` for it.

    Returns the command line to parse and the tiny policy's folder (``None`` when a model was named). Runs before
    the arguments are parsed: parsing sets up the distributed state (and DeepSpeed's ZeRO-3 model loading, a
    collective), while the build runs on the first local process only.
    """
    from .scripts.parsing import option_from_argv_or_config

    if option_from_argv_or_config(argv, "model_name_or_path") is not None:
        return list(argv), None
    if not names_judge_or_data(argv):
        from .mini.demo import demo_arguments

        demo = demo_arguments(option_from_argv_or_config(argv, "policy_cache_dir"))
        return [*argv, *_demo_options_not_set(argv, demo)], demo[1]
    warmup = option_from_argv_or_config(argv, "policy_warmup_steps")
    path = prepare_tiny_policy(
        option_from_argv_or_config(argv, "policy_cache_dir"),
        int(warmup) if warmup is not None else DEFAULT_WARMUP_STEPS,
        seed=0,
    )
    return [*argv, "--model_name_or_path", path], path


def _demo_options_not_set(argv: list[str], demo: list[str]) -> list[str]:
    """The demo's ``--option value`` pairs that the command line and its ``--config`` leave unset, so that what the
    user sets wins (a later flag would override theirs). ``--reward_kwargs`` is the exception: the user's mapping is
    laid over the demo's, which keeps the demo's language check unless the user names an ``extractor``."""
    from .scripts.parsing import option_from_argv_or_config

    kept: list[str] = []
    for flag, value in zip(demo[::2], demo[1::2]):
        users = option_from_argv_or_config(argv, flag[2:])
        if users is None:
            kept += [flag, value]
        elif flag == "--reward_kwargs":
            users = (json.loads(users) if users.strip() else {}) if isinstance(users, str) else dict(users)
            kept += [flag, json.dumps({**json.loads(value), **users})]
    return kept


def names_judge_or_data(argv: list[str]) -> bool:
    """Whether the command line (or its ``--config``) names a judge or a dataset. When it names neither (nor a
    model), the embedded default is the miniature demo of :mod:`trl_grrm.mini.demo`: the shipped policy and GRRM
    judge on the synthetic Aklan -> Berun task."""
    from .scripts.parsing import option_from_argv_or_config

    # --judge_preset and --judge_on set how the reward uses its judge, not which judge: the demo takes them like any
    # other option.
    if any(arg.startswith("--judge") and not arg.startswith(("--judge_preset", "--judge_on")) for arg in argv):
        return True
    return any(option_from_argv_or_config(argv, name) is not None for name in ("judge", "dataset_name"))


def _cold_start_response(row: dict[str, Any]) -> str:
    from .languages import language_name

    return (
        f"Analysis: a short {language_name(row['src_lang'])} sentence; translate it literally into "
        f"{language_name(row['trg_lang'])}.\n\n```\n{row['trg_text']}\n```"
    )


def _cold_start(model_dir: Path, steps: int, seed: int) -> None:
    """A plain PyTorch SFT loop (loss on the response only) teaching the tiny model the codeblock-think answer
    format on the bundled references. Runs in one process, outside any distributed setup."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .formats.mt import build_mt_prompt

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
    from .testing import build_tiny_chat_model

    print(f"[trl_grrm.embedded] building the tiny default policy in {final} ({warmup_steps} cold-start SFT steps) ...",
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
    print(f"[trl_grrm.embedded] tiny default policy ready in {time.perf_counter() - started:.0f} s", flush=True)
    return str(final)

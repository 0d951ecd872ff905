"""The miniature GRRM reproduction: the paper's pipeline end to end on the synthetic task, in minutes on a CPU.

Stages (each cached under ``output_dir/<stage>/``, skipped when its settings and inputs are unchanged):

1. ``policy_sft``: a tiny Qwen2 policy learns Aklan -> Berun with TRL's ``SFTTrainer``, stopped early on purpose.
2. ``judge_data``: groups of 2-4 distinct candidates per source, sampled from that policy plus perturbed references,
   scored by the oracle, each with a templated analysis (:mod:`trl_grrm.mini.judge_data`; ``walk`` by default),
   written by a teacher that sees every error or, with ``teacher_overlook``, has a blind spot
   (:class:`~trl_grrm.mini.judge_data.Teacher`): the judges' SFT imitates its analyses and scores, while RLVR and the
   evaluation use the oracle's.
3. ``judge_sft``: the GQM judge, from a fresh model (``judge_init="scratch"``, the default) or from the policy: reading
   drills, then :func:`~trl_grrm.data.build_judge_sft_dataset` + ``SFTTrainer``.
4. ``judge_rlvr``: :class:`~trl_grrm.trainers.JudgeRLVRTrainer` with the default ``RankingReward``.
5. ``sqm_sft``: a pointwise SQM judge from the same kind of init, on the same groups for the same number of epochs.
6. ``judge_eval``: held-out pairwise ranking accuracy of the three judges (:func:`trl_grrm.evaluation.ranking.summarize`).
7. ``grpo_gqm``, ``grpo_sqm``, ``grpo_oracle``: :class:`~trl_grrm.trainers.GSPOTrainer` on the policy with
   :class:`~trl_grrm.rewards.GroupRelativeRewardFunction` and the RLVR judge (in-process vLLM), the same with the SQM
   judge, and with the oracle as the reward; same steps and seeds. The judge rewards check the language first
   (``language_check``): by default a completion that is not Berun gets 0 without a judge call; ``"filter"`` has the
   judge score its Berun words, ``"filter_line"`` the same for one-line completions only. The policy's held-out
   oracle score is measured every ``eval_every`` steps.
8. ``report``: ``results.json``, ``results.md`` and plots.

Example:
    >>> config = MiniReproConfig.preset("ci", output_dir="/tmp/mini")
    >>> results = run_pipeline(config)  # doctest: +SKIP
    >>> results["judges"]["gqm_rlvr"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .task import (
    SOURCE_LANGUAGE,
    TARGET_LANGUAGE,
    berun_line_words,
    berun_text,
    berun_words,
    oracle_score,
    sample_source,
    translate,
    wrong_agreement,
)

logger = logging.getLogger(__name__)

STAGES = (
    "policy_sft", "judge_data", "judge_sft", "judge_rlvr", "sqm_sft", "judge_eval", "grpo_gqm", "grpo_sqm",
    "grpo_oracle", "report",
)  # fmt: skip
REWARDS = ("gqm", "sqm", "oracle")
"""The three GRPO runs: the RLVR-trained GQM judge, the SQM judge, the oracle (upper bound)."""


@dataclass
class MiniReproConfig:
    """Sizes and settings of the miniature reproduction. ``MiniReproConfig.preset("ci")`` is the reduced run CI uses.

    Example:
        >>> MiniReproConfig(seed=1).grpo_steps
        100
    """

    output_dir: str = field(
        default="outputs/mini-repro",
        metadata={"help": "Where stages cache their outputs and the results, plots and models go."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of data, initialisation and training (every stage)."})
    model_size: str = field(
        default="s",
        metadata={"help": "Size of the policy (and of the judges, unless judge_model_size is set): a key of "
                 "trl_grrm.mini.MODEL_SIZES."},
    )
    judge_model_size: str = field(
        default="",
        metadata={"help": "Size of both judges when they start from scratch (judge_init=scratch): a key of "
                 "trl_grrm.mini.MODEL_SIZES; empty: model_size."},
    )
    threads: int = field(
        default=1,
        metadata={"help": "torch CPU threads (1: matrices this small gain little from more, and two seeds can run side by"
                 " side on 2 cores)."},
    )
    workers: int = field(
        default=2,
        metadata={"help": "Stages run side by side in up to this many processes (each with `threads` torch threads), "
                 "each as soon as the stages it reads are done: 2 on 2 cores trains the GQM and SQM judges, and runs "
                 "the GSPO runs, two at a time. Results do not depend on it."},
    )

    policy_sft_steps: int = field(
        default=60,
        metadata={"help": "Policy SFT steps (deliberately too few for a perfect policy)."},
    )
    policy_sft_batch_size: int = field(default=32, metadata={"help": "Policy SFT batch size."})
    policy_sft_learning_rate: float = field(default=1e-3, metadata={"help": "Policy SFT learning rate."})
    policy_sft_agreement_noise: float = field(
        default=0.0,
        metadata={"help": "Share of policy SFT references whose verb has the wrong number (trl_grrm.mini.task."
                 "wrong_agreement): an ambiguity SFT cannot resolve, for RL to remove."},
    )

    judge_train_groups: int = field(default=30000, metadata={"help": "Judge training groups (2-4 candidates each)."})
    policy_candidates_per_group: int = field(
        default=2,
        metadata={"help": "Policy samples drawn per group before perturbed references fill it up."},
    )
    max_perturbation_errors: int = field(default=3, metadata={"help": "Most oracle errors in a perturbed reference."})
    judge_data_temperature: float = field(
        default=0.7,
        metadata={"help": "Temperature of the policy samples in the judge data (as in GSPO, see grpo_temperature)."},
    )
    analysis_style: str = field(
        default="walk",
        metadata={"help": "Templated judge analysis: compare, echo, walk or count (trl_grrm.mini.judge_data)."},
    )
    teacher_overlook: float = field(
        default=0.0,
        metadata={"help": "Share of the errors of kind teacher_blind_spot that the teacher of the judges' SFT analyses "
                 "and scores overlooks (trl_grrm.mini.judge_data.Teacher); 0: it sees every error, as the oracle. RLVR "
                 "and the evaluation always use the oracle's scores."},
    )
    teacher_blind_spot: str = field(
        default="missing",
        metadata={"help": "The errors the teacher overlooks: missing (omitted words) or number (a noun or verb in the "
                 "other number)."},
    )
    judge_reading_drills: int = field(
        default=32000,
        metadata={"help": "Reading drills (trl_grrm.mini.judge_data.build_reading_dataset) the GQM judge trains on "
                 "before its analyses, made from the training groups (several passes, each in a new order, when there "
                 "are more drills than groups); 0 skips them."},
    )
    judge_init: str = field(
        default="scratch",
        metadata={"help": "Where both judges start: policy (the SFT policy, which already translates) or scratch (a "
                 "fresh model of model_size, seeded like the policy; it must learn the languages too, but it has not "
                 "learned to write its own translation over the candidates' words: docs/miniature.md)."},
    )
    judge_sft_epochs: float = field(
        default=1.5,
        metadata={"help": "Epochs of judge SFT (GQM and SQM alike, over the same groups)."},
    )
    judge_batch_size: int = field(default=32, metadata={"help": "Judge SFT batch size."})
    judge_learning_rate: float = field(default=1e-3, metadata={"help": "Judge SFT learning rate."})
    judge_lr_scheduler: str = field(
        default="constant_with_warmup",
        metadata={"help": "Judge SFT learning-rate schedule (a transformers SchedulerType, after 20 warm-up steps), "
                 "reading drills included."},
    )

    rlvr_steps: int = field(default=30, metadata={"help": "Judge RLVR steps."})
    rlvr_prompts_per_step: int = field(default=4, metadata={"help": "Judge prompts per RLVR step."})
    rlvr_generations: int = field(default=8, metadata={"help": "Judge answers sampled per RLVR prompt."})
    rlvr_learning_rate: float = field(default=5e-5, metadata={"help": "Judge RLVR learning rate."})

    heldout_groups: int = field(default=200, metadata={"help": "Held-out 4-candidate groups for judge accuracy."})
    heldout_sources: int = field(default=200, metadata={"help": "Held-out sources for the policy's oracle score."})
    grpo_steps: int = field(default=100, metadata={"help": "GSPO steps of each policy run."})
    grpo_prompts_per_step: int = field(default=8, metadata={"help": "Prompts per GSPO step."})
    grpo_generations: int = field(default=16, metadata={"help": "Completions per prompt (the group the judge ranks)."})
    grpo_judge_orders: int = field(
        default=1,
        metadata={"help": "Orders in which the GQM judge sees a GSPO group of at most 4 distinct completions, one call "
                 "each, scores averaged (the reward's candidate_orders; larger groups are judged in subgroups, see "
                 "grpo_subgroup_coverage)."},
    )
    grpo_subgroup_coverage: int = field(
        default=2,
        metadata={"help": "Subgroups of 4 in which the GQM judge sees each completion of a GSPO group of more than 4 "
                 "distinct completions (the reward's subgroup_coverage): 2 is 8 judge calls for 16 distinct "
                 "completions, 4 is 16, as many as the SQM judge's one call per completion."},
    )
    grpo_learning_rate: float = field(
        default=2e-5,
        metadata={"help": "GSPO learning rate (at 1e-4 this policy fell even with the oracle reward, for seed 1)."},
    )
    grpo_temperature: float = field(
        default=0.7,
        metadata={"help": "GSPO sampling temperature (at 1.0 the tiny policy writes byte-level garbage now and then)."},
    )
    grpo_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "More GSPOConfig settings for the three GSPO runs, as a mapping (JSON on the command line), "
                 "e.g. '{\"beta\": 0.04, \"sft_coef\": 0.0}'."},
    )
    language_check: str = field(
        default="whole",
        metadata={"help": "How the judge rewards check the language before asking the judge, as a language-ID filter "
                 "would in real MT. whole: a completion that is not one line of Berun words gets 0 "
                 "(trl_grrm.mini.task.berun_text); filter: the judge scores the completion's Berun words, the others "
                 "dropped (berun_words), and one with none gets 0; filter_line: filter, but a completion on several "
                 "lines gets 0 (berun_line_words); off: the judge scores byte-level garbage it never saw in training. "
                 "true / false mean whole / off."},
    )
    eval_every: int = field(
        default=20,
        metadata={"help": "Measure the policy's held-out oracle score every this many GSPO steps."},
    )
    judge_backend: str = field(
        default="vllm",
        metadata={"help": "Engine serving the trained judges during GSPO: vllm (in-process) or transformers."},
    )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MiniReproConfig:
        """The settings of the preset ``name`` (:data:`PRESETS`), with ``overrides`` on top."""
        return cls(**{**preset_settings(name), **overrides})

    def __post_init__(self) -> None:
        if isinstance(self.grpo_kwargs, str):
            self.grpo_kwargs = json.loads(self.grpo_kwargs) if self.grpo_kwargs.strip() else None
        if self.grpo_judge_orders < 1:
            raise ValueError(f"grpo_judge_orders must be >= 1, got {self.grpo_judge_orders}")
        if self.grpo_subgroup_coverage < 2:
            raise ValueError(f"grpo_subgroup_coverage must be >= 2, got {self.grpo_subgroup_coverage}")
        if not 0.0 <= self.policy_sft_agreement_noise <= 1.0:
            raise ValueError(f"policy_sft_agreement_noise must lie in 0-1, got {self.policy_sft_agreement_noise}")
        self.language_check = _LANGUAGE_CHECK_ALIASES.get(str(self.language_check).lower(), self.language_check)
        if self.language_check not in LANGUAGE_CHECKS:
            raise ValueError(f"language_check must be one of {sorted(LANGUAGE_CHECKS)}, got {self.language_check!r}")
        if self.judge_backend not in ("vllm", "transformers"):
            raise ValueError(f"judge_backend must be 'vllm' or 'transformers', got {self.judge_backend!r}")
        if self.judge_init not in ("policy", "scratch"):
            raise ValueError(f"judge_init must be 'policy' or 'scratch', got {self.judge_init!r}")
        from .models import MODEL_SIZES

        if self.judge_model_size and self.judge_model_size not in MODEL_SIZES:
            raise ValueError(f"judge_model_size must be empty or one of {sorted(MODEL_SIZES)}, "
                             f"got {self.judge_model_size!r}")
        if self.judge_model_size and self.judge_init != "scratch":
            raise ValueError("judge_model_size needs judge_init='scratch' (a judge that starts from the policy has the "
                             "policy's size)")
        _teacher(self)  # raises on a bad teacher setting before any stage runs
        if self.judge_reading_drills < 0:
            raise ValueError(f"judge_reading_drills must be >= 0, got {self.judge_reading_drills}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.eval_every < 1 or self.grpo_steps < 1:
            raise ValueError("eval_every and grpo_steps must be >= 1")


PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "ci": dict(
        judge_train_groups=1000, judge_reading_drills=500, judge_sft_epochs=1.0, rlvr_steps=5, heldout_groups=50,
        heldout_sources=50, grpo_steps=20, grpo_generations=4, eval_every=10,
    ),
    "weaker_start": dict(policy_sft_steps=40, grpo_steps=200, grpo_learning_rate=5e-5, language_check="filter"),
}  # fmt: skip
"""``MiniReproConfig`` settings by name: ``full`` (the defaults); ``ci`` (every stage shrunk, so that the whole run
fits a few CPU minutes); ``weaker_start`` (a policy with more room to improve, and judge rewards that score its Berun
words: the settings under which GSPO with the trained judges follows the oracle, docs/miniature.md)."""


def preset_settings(name: str) -> dict[str, Any]:
    """The settings a preset changes from the ``MiniReproConfig`` defaults.

    Example:
        >>> preset_settings("weaker_start")["policy_sft_steps"]
        40
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name])


# The stages each stage reads, and the settings it depends on itself. A stage's cache key covers its own settings and
# those of every stage it needs, directly or not: a change re-runs exactly the stages it can affect.
_NEEDS: dict[str, tuple[str, ...]] = {
    "policy_sft": (),
    "judge_data": ("policy_sft",),
    "judge_sft": ("judge_data",),
    "judge_rlvr": ("judge_sft",),
    "sqm_sft": ("judge_data",),
    "judge_eval": ("judge_rlvr", "sqm_sft"),
    "grpo_gqm": ("judge_rlvr",),
    "grpo_sqm": ("sqm_sft",),
    "grpo_oracle": ("policy_sft",),
}
_STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "policy_sft": ("seed", "model_size", "policy_sft_steps", "policy_sft_batch_size", "policy_sft_learning_rate",
                   "policy_sft_agreement_noise", "heldout_sources"),
    "judge_data": ("judge_train_groups", "policy_candidates_per_group", "max_perturbation_errors",
                   "judge_data_temperature", "analysis_style", "teacher_overlook", "teacher_blind_spot",
                   "heldout_groups"),
    "judge_sft": ("judge_init", "judge_model_size", "judge_reading_drills", "judge_sft_epochs", "judge_batch_size",
                  "judge_learning_rate", "judge_lr_scheduler"),
    "judge_rlvr": ("rlvr_steps", "rlvr_prompts_per_step", "rlvr_generations", "rlvr_learning_rate"),
    "sqm_sft": ("judge_init", "judge_model_size", "judge_sft_epochs", "judge_batch_size", "judge_learning_rate",
                "judge_lr_scheduler"),
    "judge_eval": (),
    "grpo_gqm": ("grpo_steps", "grpo_prompts_per_step", "grpo_generations", "grpo_learning_rate", "grpo_temperature",
                 "grpo_kwargs", "eval_every", "judge_backend", "language_check"),
}
_STAGE_FIELDS["grpo_sqm"] = _STAGE_FIELDS["grpo_gqm"]
_STAGE_FIELDS["grpo_oracle"] = tuple(name for name in _STAGE_FIELDS["grpo_gqm"]
                                     if name not in ("judge_backend", "language_check"))
_STAGE_FIELDS["grpo_gqm"] += ("grpo_judge_orders", "grpo_subgroup_coverage")


def stages_needed(stages: Sequence[str]) -> list[str]:
    """``stages`` and every stage they read, directly or not, in running order (``report`` left out).

    Example:
        >>> stages_needed(["grpo_oracle"])
        ['policy_sft', 'grpo_oracle']
    """
    needed: set[str] = set()
    todo = [stage for stage in stages if stage != "report"]
    while todo:
        stage = todo.pop()
        if stage not in needed:
            needed.add(stage)
            todo.extend(_NEEDS[stage])
    return [stage for stage in STAGES if stage in needed]


def _stage_key(config: MiniReproConfig, stage: str) -> str:
    settings = {name: getattr(config, name) for s in stages_needed([stage]) for name in _STAGE_FIELDS[s]}
    return hashlib.sha256(json.dumps([stage, settings], sort_keys=True).encode()).hexdigest()[:16]


# -- small shared pieces -------------------------------------------------------------------------------------------


def mt_messages(source: str) -> list[dict[str, str]]:
    """The policy's prompt for one Aklan sentence (one user turn); the answer is the translation alone.

    Example:
        >>> print(mt_messages("ka mab tapa ka soru")[0]["content"])
        Translate the following text from Aklan into Berun:
        Aklan: ka mab tapa ka soru
        Berun:
    """
    from ..formats.mt import build_mt_prompt
    from .models import MT_PROMPT_STYLE

    return [{"role": "user", "content": build_mt_prompt(source, SOURCE_LANGUAGE, TARGET_LANGUAGE, MT_PROMPT_STYLE)}]


def sample_sources(count: int, seed: int, exclude: Sequence[str] = ()) -> list[str]:
    """``count`` distinct grammar sentences not in ``exclude``, reproducibly.

    Example:
        >>> len(sample_sources(5, seed=0)), sample_sources(3, 0) == sample_sources(3, 0)
        (5, True)
    """
    rng, excluded, sources = random.Random(seed), set(exclude), []
    seen: set[str] = set()
    for _ in range(200 * count + 1000):
        if len(sources) == count:
            return sources
        source = sample_source(rng)
        if source not in excluded and source not in seen:
            seen.add(source)
            sources.append(source)
    raise ValueError(f"the grammar has fewer than {count} sentences outside the {len(excluded)} excluded ones")


def extract_translation(text: str) -> str | None:
    """The policy's translation in a completion (the extractor that fits its prompt style)."""
    from ..formats.mt import DEFAULT_EXTRACTOR, get_extractor
    from .models import MT_PROMPT_STYLE

    return get_extractor(DEFAULT_EXTRACTOR[MT_PROMPT_STYLE])(text)


LANGUAGE_CHECKS: dict[str, Callable[[str | None], str | None]] = {
    "whole": berun_text, "filter": berun_words, "filter_line": berun_line_words, "off": extract_translation,
}  # fmt: skip
"""The judge rewards' language checks (``MiniReproConfig.language_check``), each the reward's translation extractor."""
_LANGUAGE_CHECK_ALIASES = {"true": "whole", "false": "off"}  # the setting was a flag before it had a filter form


def oracle_reward(completions: list[Any], src_text: list[str], **_: Any) -> list[float]:
    """A TRL reward function: the oracle's 0-10 score of each completion's translation, scaled to 0-1 (the GRRM
    judge reward's ``score_scale=0.1``); 0 when no translation can be extracted.

    Example:
        >>> oracle_reward([[{"role": "assistant", "content": "talu velomi"}]], ["ka mab tapa ka soru"])
        [1.0]
    """
    from ..formats.mt import completion_text

    rewards = []
    for completion, source in zip(completions, src_text):
        translation = extract_translation(completion_text(completion))
        rewards.append(0.0 if translation is None else oracle_score(translation, translate(source)) / 10)
    return rewards


def generate_translations(
    model: Any, tokenizer: Any, sources: Sequence[str], temperature: float = 0.0, num_samples: int = 1,
    batch_size: int = 128, seed: int = 0,
) -> list[list[str | None]]:
    """``num_samples`` translations of each source by the policy (greedy when ``temperature`` is 0), extracted from
    the completions (``None`` where nothing can be)."""
    import torch

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    sample = temperature > 0
    translations: list[list[str | None]] = []
    try:
        for start in range(0, len(sources), batch_size):
            chunk = list(sources[start : start + batch_size])
            texts = [tokenizer.apply_chat_template(mt_messages(s), tokenize=False, add_generation_prompt=True)
                     for s in chunk]  # fmt: skip
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.inference_mode():
                out = model.generate(
                    **encoded, max_new_tokens=24, do_sample=sample, temperature=temperature if sample else None,
                    top_p=None, top_k=None, num_return_sequences=num_samples, pad_token_id=tokenizer.pad_token_id,
                )  # fmt: skip
            decoded = [extract_translation(tokenizer.decode(ids, skip_special_tokens=True))
                       for ids in out[:, encoded["input_ids"].shape[1] :]]  # fmt: skip
            translations += [decoded[i : i + num_samples] for i in range(0, len(decoded), num_samples)]
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return translations


def policy_oracle_score(model: Any, tokenizer: Any, sources: Sequence[str]) -> dict[str, float]:
    """Greedy-decode ``sources`` with the policy; mean oracle score (0-10), exact-match and valid-format rates."""
    scores, exact, valid = [], 0, 0
    for source, (translation,) in zip(sources, generate_translations(model, tokenizer, sources)):
        reference = translate(source)
        valid += translation is not None
        exact += translation == reference
        scores.append(0 if translation is None else oracle_score(translation, reference))
    return {"oracle_score": sum(scores) / len(scores), "exact": exact / len(sources), "valid": valid / len(sources)}


def _save(trainer: Any, path: Path) -> Path:
    trainer.model.save_pretrained(path)
    trainer.processing_class.save_pretrained(path)
    return path


def _trainer_common(config: MiniReproConfig, output: Path) -> dict[str, Any]:
    # TRL turns on bf16 and gradient checkpointing by default; on a CPU, for models this small, both only cost time.
    return dict(
        output_dir=str(output / "trainer"), use_cpu=True, bf16=False, gradient_checkpointing=False, seed=config.seed,
        report_to=[], save_strategy="no", logging_steps=10, dataloader_num_workers=0, disable_tqdm=False,
    )  # fmt: skip


# -- stages --------------------------------------------------------------------------------------------------------


def run_policy_sft(config: MiniReproConfig, stage_dir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """Train the policy from scratch, briefly (an imperfect cold start, as the paper's SFT'd policy is)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from .models import build_mini_model

    heldout = inputs["heldout_sources"]
    sources = sample_sources(config.policy_sft_steps * config.policy_sft_batch_size, config.seed + 1, heldout)
    rng = random.Random(config.seed + 2)
    references = [wrong_agreement(translate(s)) if rng.random() < config.policy_sft_agreement_noise else translate(s)
                  for s in sources]  # fmt: skip
    rows = Dataset.from_dict({
        "prompt": [mt_messages(s) for s in sources],
        "completion": [[{"role": "assistant", "content": reference}] for reference in references],
    })  # fmt: skip
    init = build_mini_model(stage_dir / "init", size=config.model_size, seed=config.seed)
    args = SFTConfig(
        max_steps=config.policy_sft_steps, per_device_train_batch_size=config.policy_sft_batch_size,
        learning_rate=config.policy_sft_learning_rate, lr_scheduler_type="constant_with_warmup", warmup_steps=20,
        max_length=128, **_trainer_common(config, stage_dir),
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(init)
    trainer = SFTTrainer(model=str(init), args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    path = _save(trainer, stage_dir / "model")
    shutil.rmtree(stage_dir / "init", ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(path)
    return {"model": str(path), "heldout": policy_oracle_score(model, tokenizer, heldout)}


def _policy_candidates(policy: str, sources: Sequence[str], config: MiniReproConfig, seed: int) -> list[list[str]]:
    """Translations of each source sampled from the policy (``policy_candidates_per_group`` draws at
    ``judge_data_temperature``), keeping only those made of Berun words: a tiny policy's rare byte-level garbage
    would teach the judge little about translation quality."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sampled = generate_translations(
        AutoModelForCausalLM.from_pretrained(policy), AutoTokenizer.from_pretrained(policy), sources,
        config.judge_data_temperature, config.policy_candidates_per_group, seed=seed,
    )  # fmt: skip
    return [[t for t in texts if berun_text(t) is not None] for texts in sampled]


def _groups_dataset(sources: Sequence[str], sampled: Sequence[list[str]], sizes: Sequence[int], config, seed: int):
    """Ranking-dataset rows: per source, its distinct policy samples topped up with perturbed references."""
    from datasets import Dataset

    from .judge_data import group_analysis
    from .task import errors_to_score, oracle_errors, perturb

    rng, teacher = random.Random(seed), _teacher(config)
    columns: dict[str, list[Any]] = {k: [] for k in ("src_text", "src_lang", "trg_lang", "mt_texts", "scores",
                                                     "errors", "analysis")}  # fmt: skip
    for source, samples in zip(sources, sampled):
        reference, size = translate(source), rng.choice(list(sizes))
        candidates: list[str] = []
        for text in [*samples, *(perturb(reference, rng.randint(0, config.max_perturbation_errors), rng)
                                 for _ in range(4 * size))]:  # fmt: skip
            if text not in candidates and len(candidates) < size:
                candidates.append(text)
        if len(candidates) < size:
            continue
        rng.shuffle(candidates)
        errors = [oracle_errors(c, reference) for c in candidates]
        analysis = group_analysis(source, candidates, config.analysis_style, teacher)
        for name, value in (("src_text", source), ("src_lang", SOURCE_LANGUAGE), ("trg_lang", TARGET_LANGUAGE),
                            ("mt_texts", candidates), ("errors", errors),
                            ("scores", [errors_to_score(e) for e in errors]), ("analysis", analysis)):  # fmt: skip
            columns[name].append(value)
    return Dataset.from_dict(columns)


def _teacher(config: MiniReproConfig):
    from .judge_data import Teacher

    return Teacher(config.teacher_overlook, config.teacher_blind_spot)


def run_judge_data(config: MiniReproConfig, stage_dir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """Training groups (2-4 candidates) and held-out groups (4 candidates, unseen sources)."""
    policy, heldout = inputs["policy_sft"]["model"], inputs["heldout_sources"]
    train_sources = sample_sources(config.judge_train_groups, config.seed + 2, heldout)
    train = _groups_dataset(train_sources, _policy_candidates(policy, train_sources, config, config.seed), (2, 3, 4),
                            config, config.seed + 3)  # fmt: skip
    eval_sources = sample_sources(config.heldout_groups, config.seed + 4, [*heldout, *train_sources])
    test = _groups_dataset(eval_sources, _policy_candidates(policy, eval_sources, config, config.seed + 1), (4,),
                           config, config.seed + 5)  # fmt: skip
    train.save_to_disk(stage_dir / "train")
    test.save_to_disk(stage_dir / "test")
    policy_share = sum(
        sum(e > 0 for e in errors) for errors in train["errors"]
    ) / max(sum(len(e) for e in train["errors"]), 1)
    return {"train": str(stage_dir / "train"), "test": str(stage_dir / "test"), "train_groups": len(train),
            "test_groups": len(test), "train_candidates_with_errors": policy_share}  # fmt: skip


def _sft_judge(
    config: MiniReproConfig, stage_dir: Path, init: str, conversations, batch_size: int, epochs: float | None = None
) -> str:
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from ..data import to_prompt_completion

    rows = to_prompt_completion(conversations).shuffle(seed=config.seed)
    args = SFTConfig(
        num_train_epochs=config.judge_sft_epochs if epochs is None else epochs, per_device_train_batch_size=batch_size,
        learning_rate=config.judge_learning_rate, lr_scheduler_type=config.judge_lr_scheduler, warmup_steps=20,
        max_length=384, **_trainer_common(config, stage_dir),
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(init)
    trainer = SFTTrainer(model=init, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    return str(_save(trainer, stage_dir / "model"))


def _judge_init(config: MiniReproConfig, stage_dir: Path, inputs: dict[str, Any]) -> str:
    if config.judge_init == "policy":
        return inputs["policy_sft"]["model"]
    from .models import build_mini_model

    size = config.judge_model_size or config.model_size
    return str(build_mini_model(stage_dir / "init", size=size, seed=config.seed))


def run_judge_sft(config: MiniReproConfig, stage_dir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """The GQM judge's SFT cold start on the templated analyses, after reading drills if asked for."""
    from datasets import concatenate_datasets, load_from_disk

    from ..data.judge_builders import build_judge_sft_dataset
    from .judge_data import as_taught, build_reading_dataset

    train = load_from_disk(inputs["judge_data"]["train"])
    init = _judge_init(config, stage_dir, inputs)
    if config.judge_reading_drills > 0:
        passes = math.ceil(config.judge_reading_drills / len(train))
        groups = concatenate_datasets([train.shuffle(seed=config.seed + n) for n in range(passes)])
        groups = groups.select(range(config.judge_reading_drills))
        drills = build_reading_dataset(groups, seed=config.seed)
        init = _sft_judge(config, stage_dir / "reading", init, drills, config.judge_batch_size, epochs=1)
    conversations = build_judge_sft_dataset(as_taught(train, _teacher(config)))
    model = _sft_judge(config, stage_dir, init, conversations, config.judge_batch_size)
    return {"model": model}


def run_sqm_sft(config: MiniReproConfig, stage_dir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """The pointwise judge on the same budget: the same groups, one conversation per candidate, for the same number
    of epochs and optimiser steps (the batch holds as many candidates as the GQM judge's batch holds)."""
    from datasets import load_from_disk

    from .judge_data import as_taught, build_sqm_sft_dataset

    train, teacher = load_from_disk(inputs["judge_data"]["train"]), _teacher(config)
    conversations = build_sqm_sft_dataset(as_taught(train, teacher), config.analysis_style, teacher)
    batch_size = round(config.judge_batch_size * len(conversations) / len(train))
    return {"model": _sft_judge(config, stage_dir, _judge_init(config, stage_dir, inputs), conversations, batch_size)}


def run_judge_rlvr(config: MiniReproConfig, stage_dir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    """RLVR of the SFT judge on its verifiable ranking reward (shuffled and sub-grouped training groups)."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from ..data.judge_builders import build_judge_rlvr_dataset
    from ..trainers import JudgeRLVRConfig, JudgeRLVRTrainer

    train = load_from_disk(inputs["judge_data"]["train"])
    rows = build_judge_rlvr_dataset(train, shuffle_augment=1, subgroup_augment=1, seed=config.seed)
    rows = rows.shuffle(seed=config.seed)
    init = inputs["judge_sft"]["model"]
    args = JudgeRLVRConfig(
        max_steps=config.rlvr_steps, num_generations=config.rlvr_generations,
        per_device_train_batch_size=config.rlvr_prompts_per_step * config.rlvr_generations,
        learning_rate=config.rlvr_learning_rate, lr_scheduler_type="constant", max_completion_length=200,
        **{**_trainer_common(config, stage_dir), "logging_steps": 5},
    )  # fmt: skip
    trainer = JudgeRLVRTrainer(model=init, args=args, train_dataset=rows,
                               processing_class=AutoTokenizer.from_pretrained(init))  # fmt: skip
    trainer.train()
    history = [{k: v for k, v in h.items() if k in ("step", "reward", "grrm_ranking_reward/valid_rate")}
               for h in trainer.state.log_history if "reward" in h]  # fmt: skip
    return {"model": str(_save(trainer, stage_dir / "model")), "history": history}


def evaluate_judge(model: str, style: str, test_dir: str, blind_spot: str = "missing") -> dict[str, Any]:
    """Held-out pairwise ranking accuracy (ties a class of their own) of one judge, greedy, with the package's
    ``eval-ranking`` machinery; the share of judged groups whose scores are all equal; and the accuracy on the pairs
    that ``blind_spot`` decides (:func:`~trl_grrm.mini.judge_data.blind_spot_pairs`; an unjudged group's pairs count
    as wrong), where a judge that learned a blind teacher's labels fails."""
    from datasets import load_from_disk

    from ..engines import SamplingSettings, TransformersEngine
    from ..evaluation.ranking import GQMJudge, SQMJudge, groups_from_dataset, judge_groups, summarize
    from ..ranking import pairwise_relations
    from .judge_data import blind_spot_pairs

    groups = groups_from_dataset(load_from_disk(test_dir))
    engine = TransformersEngine(model, dtype="float32", batch_size=100)
    judge = GQMJudge() if style == "gqm" else SQMJudge()
    evaluations = judge_groups(groups, judge, engine, SamplingSettings(max_tokens=200), max_retries=0)
    metrics = summarize(evaluations, 1)
    judged = [e.scores for e in evaluations if e.scores is not None]
    decided = []
    for evaluation in evaluations:
        truth = pairwise_relations(dict(enumerate(evaluation.group.scores)))
        given = pairwise_relations(dict(enumerate(evaluation.scores))) if evaluation.scores is not None else {}
        pairs = blind_spot_pairs(evaluation.group.candidates, translate(evaluation.group.source_text), blind_spot)
        decided += [given.get(pair) == truth[pair] for pair in pairs]
    return {
        "accuracy": metrics["accuracy"], "parse_failure_rate": metrics["parse_failure_rate"],
        "tie_rate": metrics["tie_rate"], "truth_tie_rate": metrics["truth_tie_rate"],
        "zero_variance_groups": sum(len(set(s)) == 1 for s in judged) / max(len(judged), 1),
        "blind_spot_accuracy": sum(decided) / len(decided) if decided else None, "blind_spot_pairs": len(decided),
    }  # fmt: skip


def run_judge_eval(config: MiniReproConfig, stage_dir: Path, inputs: dict[str, Any]) -> dict[str, Any]:
    test, blind_spot = inputs["judge_data"]["test"], config.teacher_blind_spot
    return {
        "gqm_sft": evaluate_judge(inputs["judge_sft"]["model"], "gqm", test, blind_spot),
        "gqm_rlvr": evaluate_judge(inputs["judge_rlvr"]["model"], "gqm", test, blind_spot),
        "sqm": evaluate_judge(inputs["sqm_sft"]["model"], "sqm", test, blind_spot),
    }


def judge_reward(
    judge_model: str, style: str, backend: str, num_generations: int, language_check: str = "whole", **options: Any
):
    """The GRPO reward for a trained miniature judge: :class:`~trl_grrm.rewards.GroupRelativeRewardFunction`, whose
    translation extractor is the language check (:data:`LANGUAGE_CHECKS`): what it rejects gets 0 without a judge
    call. ``options`` are further fields of the reward (``candidate_orders=2``)."""
    from ..rewards import GroupRelativeRewardFunction

    if backend == "vllm":
        engine: dict[str, Any] = dict(dtype="float32", max_model_len=512, enforce_eager=True)
    else:
        engine = dict(batch_size=64, device="cpu")
    return GroupRelativeRewardFunction(
        judge=dict(model=judge_model, backend=backend, max_tokens=200, max_parse_retries=1, **engine),
        judge_style=style, num_generations=num_generations, score_scale=0.1, invalid_completion_reward=0.0,
        unjudged_reward=None, extractor=LANGUAGE_CHECKS[language_check],
        name=f"{style}_judge", **options,
    )  # fmt: skip


def policy_curve_callback(tokenizer: Any, sources: Sequence[str], every: int):
    """A ``TrainerCallback`` whose ``points`` hold the held-out oracle score (:func:`policy_oracle_score`) at step 0,
    every ``every`` steps and at the last step."""
    from transformers import TrainerCallback

    class PolicyCurve(TrainerCallback):
        """Held-out oracle score of the policy at step 0 and every ``every`` steps."""

        def __init__(self) -> None:
            self.points: list[dict[str, float]] = []

        def _measure(self, state, model) -> None:
            self.points.append({"step": state.global_step, **policy_oracle_score(model, tokenizer, sources)})
            logger.info("step %d: held-out oracle score %.2f", state.global_step, self.points[-1]["oracle_score"])

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._measure(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                self._measure(state, model)

    return PolicyCurve()


def run_grpo(config: MiniReproConfig, stage_dir: Path, inputs: dict[str, Any], reward: str) -> dict[str, Any]:
    """GSPO on the SFT policy with one of the three rewards; same data order, steps and seed for all three."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from ..trainers import GSPOConfig, GSPOTrainer

    policy, heldout = inputs["policy_sft"]["model"], inputs["heldout_sources"]
    sources = sample_sources(config.grpo_steps * config.grpo_prompts_per_step, config.seed + 6, heldout)
    data = Dataset.from_dict({"prompt": [mt_messages(s) for s in sources], "src_text": sources,
                              "src_lang": [SOURCE_LANGUAGE] * len(sources),
                              "trg_lang": [TARGET_LANGUAGE] * len(sources)})  # fmt: skip
    if reward == "oracle":
        reward_funcs: list[Any] = [oracle_reward]
    else:
        judge = inputs["judge_rlvr" if reward == "gqm" else "sqm_sft"]["model"]
        gqm_options = dict(candidate_orders=config.grpo_judge_orders, subgroup_coverage=config.grpo_subgroup_coverage)
        reward_funcs = [judge_reward(judge, reward, config.judge_backend, config.grpo_generations,
                                     config.language_check, **(gqm_options if reward == "gqm" else {}))]
    tokenizer = AutoTokenizer.from_pretrained(policy)
    curve = policy_curve_callback(tokenizer, heldout, config.eval_every)
    settings = dict(
        max_steps=config.grpo_steps, num_generations=config.grpo_generations,
        per_device_train_batch_size=config.grpo_prompts_per_step * config.grpo_generations,
        learning_rate=config.grpo_learning_rate, lr_scheduler_type="constant", max_completion_length=24,
        temperature=config.grpo_temperature, beta=0.0, shuffle_dataset=False,
        **{**_trainer_common(config, stage_dir), "logging_steps": 1},
    )  # fmt: skip
    args = GSPOConfig(**{**settings, **(config.grpo_kwargs or {})})
    trainer = GSPOTrainer(model=policy, reward_funcs=reward_funcs, args=args, train_dataset=data,
                          processing_class=tokenizer, callbacks=[curve])  # fmt: skip
    try:
        trainer.train()
    finally:
        for function in reward_funcs:
            if hasattr(function, "engine"):
                function.engine.close()
    steps = [h for h in trainer.state.log_history if "frac_reward_zero_std" in h]
    name = f"{reward}_judge"

    def no_signal(h: dict[str, Any]) -> float:
        # TRL counts a group with equal rewards; a group the judge could not score (NaN rewards) teaches nothing either.
        # TRL also counts an unscored group holding two or more invalid completions (equal rewards of 0): such a group
        # is counted twice, hence the cap.
        unjudged = h.get(f"{name}/unjudged_groups", 0.0) / max(h.get(f"{name}/groups", 1.0), 1.0)
        return min(1.0, h["frac_reward_zero_std"] + unjudged)

    return {
        "curve": curve.points,
        "zero_variance": [{"step": h["step"], "value": no_signal(h)} for h in steps],
        "reward": [{"step": h["step"], "value": h["reward"]} for h in steps],
        "model": str(_save(trainer, stage_dir / "model")),
    }


# -- report --------------------------------------------------------------------------------------------------------


LATE_EVALUATIONS = 3
"""``late_oracle_score`` averages a GSPO run's last this many held-out evaluations (step 0 left out). Between two
evaluations 20 steps apart a run's score moved by as much as 0.33 (docs/miniature.md, "150 judge RLVR steps"), so the
final point alone can meet or miss a target by chance."""


def summarize_results(config: MiniReproConfig, outputs: dict[str, Any]) -> dict[str, Any]:
    """The numbers the issue's targets are about, from the stage outputs: per GSPO run the final and the late (mean of
    the last :data:`LATE_EVALUATIONS`) held-out oracle score, each with its gain over the start and its share of the
    oracle run's gain."""
    start = outputs["grpo_oracle"]["curve"][0]["oracle_score"]
    runs = {}
    for reward in REWARDS:
        run = outputs[f"grpo_{reward}"]
        zero = [p["value"] for p in run["zero_variance"]]
        late = [p["oracle_score"] for p in run["curve"][1:]][-LATE_EVALUATIONS:] or [start]
        runs[reward] = {
            "final_oracle_score": run["curve"][-1]["oracle_score"],
            "late_oracle_score": sum(late) / len(late),
            "best_oracle_score": max(p["oracle_score"] for p in run["curve"]),
            "zero_variance_fraction": sum(zero) / max(len(zero), 1),
        }
    for prefix, score in (("", "final_oracle_score"), ("late_", "late_oracle_score")):
        oracle_gain = runs["oracle"][score] - start
        for run in runs.values():
            gain = run[score] - start
            run[f"{prefix}relative_gain"] = gain / start if start else None
            run[f"{prefix}share_of_oracle_gain"] = gain / oracle_gain if oracle_gain > 0 else None
    return {"config": dataclasses.asdict(config), "policy_start": start, "judges": outputs["judge_eval"],
            "grpo": runs, "stage_seconds": outputs.get("stage_seconds", {}),
            "wall_seconds": outputs.get("wall_seconds")}  # fmt: skip


def _plots(outputs: dict[str, Any], results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    judges = results["judges"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = ["GQM SFT", "GQM RLVR", "SQM"]
    values = [judges[k]["accuracy"] or 0.0 for k in ("gqm_sft", "gqm_rlvr", "sqm")]
    ax.bar(labels, values, color=["#9ecae1", "#3182bd", "#fdae6b"])
    for i, value in enumerate(values):
        ax.text(i, value + 0.01, f"{value:.2f}", ha="center")
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out pairwise accuracy")
    ax.set_title("Judge ranking accuracy (4-candidate groups)")
    fig.tight_layout()
    fig.savefig(out / "judge_accuracy.png", dpi=120)
    names.append("judge_accuracy.png")
    for key, ylabel, filename, title in (
        ("zero_variance", "groups with no signal", "zero_variance.png", "Equal rewards or unjudged groups"),
        ("curve", "held-out oracle score (0-10)", "policy_score.png", "Policy quality during GSPO"),
    ):
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        for reward in REWARDS:
            points = outputs[f"grpo_{reward}"][key]
            y = [p["oracle_score"] if key == "curve" else p["value"] for p in points]
            if key == "zero_variance":  # a 10-step moving average; per-step values are 0, 1/8, ...
                y = [sum(y[max(0, i - 9) : i + 1]) / len(y[max(0, i - 9) : i + 1]) for i in range(len(y))]
            ax.plot([p["step"] for p in points], y, label=f"{reward} reward", marker="o" if key == "curve" else None)
        ax.set_xlabel("GSPO step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / filename, dpi=120)
        names.append(filename)
        plt.close("all")
    return names


def render_markdown(results: dict[str, Any]) -> str:
    """``results.md``: the judge table, the GRPO table and the plots."""

    def fmt(value: Any, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    judges, runs = results["judges"], results["grpo"]
    lines = [
        f"# Miniature reproduction (seed {results['config']['seed']})", "",
        f"| judge | held-out pairwise accuracy | on the pairs {results['config']['teacher_blind_spot']} errors decide "
        "| zero-variance groups | parse failures |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for key, label in (("gqm_sft", "GQM after SFT"), ("gqm_rlvr", "GQM after RLVR"), ("sqm", "SQM (pointwise)")):
        j = judges[key]
        lines.append(f"| {label} | {fmt(j['accuracy'])} | {fmt(j.get('blind_spot_accuracy'))} | "
                     f"{fmt(j['zero_variance_groups'])} | {fmt(j['parse_failure_rate'])} |")  # fmt: skip
    lines += [
        "", f"Policy after SFT: held-out oracle score {fmt(results['policy_start'])} / 10.", "",
        "| GSPO reward | final oracle score | relative gain | share of oracle-reward gain "
        f"| mean of the last {LATE_EVALUATIONS} evaluations (gain, share) | zero-variance groups |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip

    def percent(gain: float | None) -> str:
        return "n/a" if gain is None else f"{100 * gain:.0f}%"

    for reward in REWARDS:
        r = runs[reward]
        lines.append(f"| {reward} | {fmt(r['final_oracle_score'])} | {percent(r['relative_gain'])} | "
                     f"{fmt(r['share_of_oracle_gain'])} | {fmt(r['late_oracle_score'])} "
                     f"({percent(r['late_relative_gain'])}, {fmt(r['late_share_of_oracle_gain'])}) | "
                     f"{fmt(r['zero_variance_fraction'])} |")  # fmt: skip
    seconds = results.get("stage_seconds", {})
    if seconds:
        lines += ["", "Stage times (s, this run; cached stages 0): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
                  + (f"; wall {results['wall_seconds']:.0f}" if results.get("wall_seconds") else "")]  # fmt: skip
    lines += ["", "![judges](judge_accuracy.png) ![zero variance](zero_variance.png) ![policy](policy_score.png)", ""]
    return "\n".join(lines)


# -- driver --------------------------------------------------------------------------------------------------------

_RUNNERS: dict[str, Callable[[MiniReproConfig, Path, dict[str, Any]], dict[str, Any]]] = {
    "policy_sft": run_policy_sft,
    "judge_data": run_judge_data,
    "judge_sft": run_judge_sft,
    "judge_rlvr": run_judge_rlvr,
    "sqm_sft": run_sqm_sft,
    "judge_eval": run_judge_eval,
    "grpo_gqm": lambda c, d, i: run_grpo(c, d, i, "gqm"),
    "grpo_sqm": lambda c, d, i: run_grpo(c, d, i, "sqm"),
    "grpo_oracle": lambda c, d, i: run_grpo(c, d, i, "oracle"),
}


def _is_cached(config: MiniReproConfig, stage: str) -> bool:
    record = Path(config.output_dir) / stage / "stage.json"
    return record.exists() and json.loads(record.read_text()).get("key") == _stage_key(config, stage)


def _worker_error_file(config: MiniReproConfig, stage: str) -> Path:
    return Path(config.output_dir) / stage / "worker_error.txt"


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_raises_system_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit`` (exit code 143) unless the program handles SIGTERM itself.

    A plain SIGTERM (from ``kill``, ``timeout`` or a job scheduler) ends the process at once: its stage workers and
    its in-process vLLM engines would keep running, orphaned, and keep the CPUs busy. As an exception it unwinds the
    stages instead: the workers are stopped (:func:`_stop_workers`) and each GSPO stage closes its judge engines.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _stop_signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive within the block take effect when it ends, through the handlers they had.

    Python runs signal handlers in the main thread whichever thread the signal reaches, so masking the signal would
    not defer it; the block holds it in a handler instead (only in the main thread, where handlers can be set).
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    signums = [signum for signum in (signal.SIGINT, signal.SIGTERM) if in_main_thread and signal.getsignal(signum)]
    arrived: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: arrived.append(signum)) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in arrived:
            signal.raise_signal(signum)


def _stop_workers(processes: Sequence[Any], grace_seconds: float = 60.0) -> None:
    """SIGTERM every running stage worker (it unwinds, :func:`_sigterm_raises_system_exit`), then SIGKILL those still
    running after ``grace_seconds``."""
    for process in processes:
        process.terminate()
    deadline = time.time() + grace_seconds
    for process in processes:
        process.join(max(deadline - time.time(), 0.0))
        if process.is_alive():
            logger.warning("stage worker %s did not stop within %.0f s of SIGTERM; killing it", process.name,
                           grace_seconds)  # fmt: skip
            process.kill()
            process.join()


def _run_stage_in_worker(config: MiniReproConfig, stage: str) -> None:
    """Runs ``stage`` in this (spawned) process; its traceback also goes to :func:`_worker_error_file`, for the parent
    to name the error even when the worker's stderr is captured or cut."""
    import traceback

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    error_file = _worker_error_file(config, stage)
    error_file.unlink(missing_ok=True)
    try:
        run_pipeline(dataclasses.replace(config, workers=1), stages=[stage], progress=False)
    except BaseException:
        error_file.parent.mkdir(parents=True, exist_ok=True)
        error_file.write_text(traceback.format_exc())
        raise


def _run_side_by_side(config: MiniReproConfig, to_run: Sequence[str], bar: Any) -> dict[str, float]:
    """Run the uncached stages of ``to_run`` in up to ``config.workers`` spawned processes, each stage once the stages
    it reads are cached; returns each stage's wall seconds. A failed stage stops new launches; the stages already
    running finish (and are cached) before the error is raised. An exception here (Ctrl-C, or SIGTERM under
    :func:`run_pipeline`) stops the running workers before it propagates."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    done = {stage for stage in to_run if _is_cached(config, stage)}
    bar.update(len(done))
    running: dict[str, tuple[Any, float]] = {}
    seconds: dict[str, float] = {}
    failed: list[str] = []
    try:
        while len(done) < len(to_run) and (running or not failed):
            for stage in to_run:
                ready = all(need in done for need in _NEEDS[stage]) and stage not in done and stage not in running
                if not failed and ready and len(running) < config.workers:
                    process = context.Process(target=_run_stage_in_worker, args=(config, stage),
                                              name=f"mini-repro-{stage}")  # fmt: skip
                    with _stop_signals_deferred():  # one arriving mid-start would orphan a worker not yet in running
                        process.start()
                        running[stage] = (process, time.time())
                    bar.set_postfix_str(", ".join(running))
            if not running:  # cannot happen: to_run holds every stage its stages read (stages_needed)
                raise RuntimeError(f"no stage of {list(to_run)} can start; done: {sorted(done)}")
            wait([process.sentinel for process, _ in running.values()])
            for stage, (process, started) in list(running.items()):
                if process.exitcode is None:
                    continue
                del running[stage]
                if process.exitcode == 0 and _is_cached(config, stage):
                    done.add(stage)
                    seconds[stage] = time.time() - started
                    bar.update(1)
                else:
                    error_file = _worker_error_file(config, stage)
                    error = error_file.read_text().strip().splitlines()[-1] if error_file.exists() else "no traceback"
                    failed.append(f"{stage} (exit code {process.exitcode}: {error}; traceback in {error_file})")
    except BaseException:
        _stop_workers([process for process, _ in running.values()])
        raise
    if failed:
        raise RuntimeError(f"stage(s) failed in their worker process: {', '.join(failed)}. Finished stages are "
                           "cached: fix the cause and rerun.")  # fmt: skip
    return seconds


@_sigterm_raises_system_exit()
def run_pipeline(config: MiniReproConfig, stages: Sequence[str] | None = None, progress: bool = True) -> dict:
    """Run (or resume) the miniature reproduction and write ``results.json``, ``results.md`` and the plots into
    ``config.output_dir``; returns the results. ``stages`` limits the run to those stages and the ones they read
    (:func:`stages_needed`), each taken from its cache when its settings are unchanged; ``report`` among them runs
    everything.

    A SIGTERM ends the run as Ctrl-C does, unless the program handles SIGTERM itself: the running stages stop, with
    their worker processes and in-process vLLM engines, and the finished ones stay cached (exit code 143)."""
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if stages is not None and (unknown := sorted(set(stages) - set(STAGES))):
        raise ValueError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    everything = stages is None or "report" in stages
    to_run = stages_needed(STAGES if everything else stages)
    outputs: dict[str, Any] = {
        "heldout_sources": sample_sources(config.heldout_sources, config.seed + 1_000),
        "stage_seconds": {},
    }
    started_run = time.time()
    side_by_side: dict[str, float] = {}
    if config.workers > 1:
        with tqdm(total=len(to_run), desc="mini-repro", disable=not progress, unit="stage") as bar:
            side_by_side = _run_side_by_side(config, to_run, bar)
    bar = tqdm(to_run, desc="mini-repro", disable=not progress or config.workers > 1, unit="stage")
    for stage in bar:
        bar.set_postfix_str(stage)
        stage_dir = out / stage
        record = stage_dir / "stage.json"
        key = _stage_key(config, stage)
        if _is_cached(config, stage):
            outputs[stage] = json.loads(record.read_text())["output"]
            outputs["stage_seconds"][stage] = side_by_side.get(stage, 0.0)
            continue
        if stage_dir.exists():
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True)
        started = time.time()
        outputs[stage] = _RUNNERS[stage](config, stage_dir, outputs)
        outputs["stage_seconds"][stage] = time.time() - started
        record.write_text(json.dumps({"key": key, "output": outputs[stage]}, indent=1))
        logger.info("stage %s done in %.0f s", stage, outputs["stage_seconds"][stage])
    outputs["wall_seconds"] = time.time() - started_run
    if not everything:
        return outputs
    results = summarize_results(config, outputs)
    results["plots"] = _plots(outputs, results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(render_markdown(results))
    return results

"""The embedded default of ``trl-grrm grpo-mt``, made of the shipped miniature models (:mod:`trl_grrm.mini.assets`).

A run with no model, judge or data named trains the miniature SFT policy on Aklan -> Berun prompts with the real
tiny GRRM judge (RLVR-trained by ``trl-grrm reproduce-mini``) served by in-process vLLM, and reports the policy's
held-out oracle score before and after, with a plot (:class:`HeldoutOracleCurve`).

Example:
    >>> argv = demo_arguments("/tmp/cache")  # doctest: +SKIP
    >>> argv[:2]  # doctest: +SKIP
    ['--model_name_or_path', '/tmp/cache/mini-assets-.../policy']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..embedded import EMBEDDED_TRAINING_DEFAULTS
from .assets import materialize_assets
from .pipeline import MiniReproConfig, policy_curve_callback, sample_sources
from .task import SOURCE_LANGUAGE, TARGET_LANGUAGE, translate

_PIPELINE = MiniReproConfig()

#: Trainer settings of the embedded default: those of the stand-in default, with the pipeline's GSPO settings, read
#: from its defaults so the two cannot drift apart (8 prompts x 16 short translations per step, on-policy, temperature
#: 0.7, learning rate 2e-5, no KL term; docs/miniature.md says why each), 60 steps, and no gradient checkpointing
#: (TRL's default, which for a 1M-parameter policy only costs time).
DEMO_TRAINING_DEFAULTS: dict[str, Any] = {
    **EMBEDDED_TRAINING_DEFAULTS,
    "output_dir": "outputs/grpo-mt-mini",
    "max_steps": 60,
    "learning_rate": _PIPELINE.grpo_learning_rate,
    "num_generations": _PIPELINE.grpo_generations,
    "per_device_train_batch_size": _PIPELINE.grpo_prompts_per_step * _PIPELINE.grpo_generations,
    "steps_per_generation": 1,
    "max_completion_length": 24,
    "temperature": _PIPELINE.grpo_temperature,
    "beta": 0.0,
    "gradient_checkpointing": False,
}
DEMO_TRAIN_SOURCES = 2000
DEMO_HELDOUT_SOURCES = 200
_HELDOUT_SEED = 1_000  # the pipeline's held-out seed for seed 0, so the numbers compare with results.md
DEMO_MARKER = "MINI_DEMO.json"


def demo_arguments(cache_dir: str | Path | None = None) -> list[str]:
    """Command-line options that point ``grpo-mt`` at the miniature policy, judge and data (built once, cached)."""
    from .models import MT_PROMPT_STYLE

    paths = materialize_assets(cache_dir)
    root = paths["policy"].parent
    data = root / "mini_mt_train.jsonl"
    if not data.exists():
        heldout = sample_sources(DEMO_HELDOUT_SOURCES, _HELDOUT_SEED)
        rows = [{"src_text": s, "src_lang": SOURCE_LANGUAGE, "trg_lang": TARGET_LANGUAGE, "trg_text": translate(s)}
                for s in sample_sources(DEMO_TRAIN_SOURCES, 6, exclude=heldout)]  # fmt: skip
        partial = data.with_suffix(f".{id(rows)}.tmp")
        partial.write_text("".join(json.dumps(row) + "\n" for row in rows))
        partial.rename(data)
        (root / DEMO_MARKER).write_text(json.dumps({"policy": str(paths["policy"]), "judge": str(paths["judge"])}))
    return [
        "--model_name_or_path", str(paths["policy"]), "--dataset_name", str(data), "--prompt_style", MT_PROMPT_STYLE,
        "--judge.backend", "vllm", "--judge.model", str(paths["judge"]), "--judge.dtype", "float32",
        "--judge.max_model_len", "512", "--judge.enforce_eager", "true", "--judge.max_tokens", "200",
        "--judge_preset", "default",
        # The language check (trl_grrm.mini.task.berun_words): the judge, which never saw byte-level garbage, scores
        # the completion's Berun words with the garbled ones dropped (reproduce-mini's --language_check filter; giving
        # the whole completion 0 instead kept GSPO from most of the oracle's gain, docs/miniature.md).
        "--reward_kwargs", json.dumps({"extractor": "trl_grrm.mini.task:berun_words"}),
    ]  # fmt: skip


def is_demo_policy(path: str | None) -> bool:
    """Whether ``path`` is the miniature policy :func:`demo_arguments` set up."""
    return bool(path) and (Path(path).parent / DEMO_MARKER).exists()


def heldout_curve_callback(tokenizer: Any, every: int = 20):
    """A ``TrainerCallback`` measuring the policy's held-out oracle score at the start, every ``every`` steps and at
    the end; :func:`report_curve` prints and plots what it measured."""
    return policy_curve_callback(tokenizer, sample_sources(DEMO_HELDOUT_SOURCES, _HELDOUT_SEED), every)


def report_curve(points: list[dict[str, float]], output_dir: str | Path) -> Path:
    """Print the held-out oracle score before and after training and save ``heldout_oracle_score.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first, last = points[0], points[-1]
    print(f"[grpo_mt] held-out oracle score (0-10, {DEMO_HELDOUT_SOURCES} unseen sentences, greedy): "
          f"{first['oracle_score']:.2f} before -> {last['oracle_score']:.2f} after {int(last['step'])} steps "
          f"(exact translations {first['exact']:.0%} -> {last['exact']:.0%})")  # fmt: skip
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p["step"] for p in points], [p["oracle_score"] for p in points], marker="o")
    ax.set_xlabel("GSPO step")
    ax.set_ylabel("held-out oracle score (0-10)")
    ax.set_title("Miniature policy trained with the tiny GRRM judge")
    fig.tight_layout()
    path = Path(output_dir) / "heldout_oracle_score.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    (Path(output_dir) / "heldout_oracle_score.json").write_text(json.dumps(points, indent=1))
    print(f"[grpo_mt] learning curve: {path}")
    return path

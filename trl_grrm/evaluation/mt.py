"""MT evaluation: translate a test set with a model, pull the translation out of each answer, and score it.

``trl-grrm eval-mt --model MODEL --data TEST [--output results.json]``

1. **Generate** with vLLM in-process (``--engine vllm``) or plain transformers (``--engine transformers``; the
   default on machines without a GPU), with the model's chat template and the same MT prompt the policy was trained
   with (``--style``, default ``codeblock-think``). ``--num-samples k`` samples k answers per source
   (``--temperature`` > 0 then); the first sample is the one the corpus metrics score.
2. **Extract** the translation with the style's extractor (``codeblock`` for ``codeblock-think``; override with
   ``--extractor``). A failed extraction (e.g. no closing code fence) gives an empty hypothesis, which is scored as
   such and counted under ``extraction_failed``.
3. **Score** per language pair, on the rows that have a reference:

   * BLEU (sacrebleu; tokenizer ``zh`` for Chinese targets, ``ja-mecab``/``ko-mecab`` for Japanese/Korean when
     installed, else ``char``; ``13a`` otherwise) and chrF++ (``CHRF(word_order=2)``), with their signatures.
   * COMET (``--comet-model``, default ``Unbabel/wmt22-comet-da``) when ``unbabel-comet`` is importable and the
     model can be loaded (a local checkpoint, or the hub when online); otherwise the output says it was skipped and
     why.
   * Optionally a GRRM judge (``--judge-model`` with ``--judge-backend openai|vllm|transformers``), in one of two
     designs (``--judge-mode``):

     - ``reference`` (default): each first-sample hypothesis is judged **in a group of two with the reference**
       (candidate order shuffled, seeded). The reference is just another candidate, not a reference the judge
       compares against, so this stays the GRRM's reference-free group judgement, anchored by a fixed competitor.
       Reported: mean judge score of the hypotheses and of the references, and the hypothesis's win/tie rate
       against the reference. A hypothesis identical to the reference is a tie without a judge call.
     - ``samples``: the k samples of each source are judged **together as one group**, exactly as in GRPO
       training (needs ``--num-samples`` >= 2; references not needed). Reported: the mean judge score of all
       samples and the mean best-minus-worst spread within a group. GRRM scores are group-relative, so compare
       systems with ``reference`` mode rather than by this mean.

     In both modes a failed extraction scores 0 (the floor of the 0-10 scale) without a judge call; groups the
     judge could not score (unparsable after retries, too long) are left out of the means and counted.

The table (rich) shows one row per language pair plus the macro average; ``--output`` writes everything as JSON,
including every prompt, raw answer, extracted hypothesis and judge score.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..formats.mt import DEFAULT_EXTRACTOR, MT_PROMPT_TEMPLATES, build_mt_prompt, get_extractor

DEFAULT_COMET_MODEL = "Unbabel/wmt22-comet-da"


# -- data ----------------------------------------------------------------------------------------------------------


@dataclass
class EvalItem:
    """One source sentence, its answers and scores."""

    index: int
    src_text: str
    src_lang: str
    trg_lang: str
    reference: str | None
    prompt: str
    responses: list[str] = field(default_factory=list)
    hypotheses: list[str | None] = field(default_factory=list)  # extracted; None = extraction failed
    judge: dict[str, Any] | None = None
    comet: float | None = None

    @property
    def pair(self) -> str:
        return f"{self.src_lang}-{self.trg_lang}"

    @property
    def hypothesis(self) -> str:
        """The first sample's translation ('' if extraction failed): what the corpus metrics score."""
        return self.hypotheses[0] or "" if self.hypotheses else ""


def load_items(data: str | Path | None, split: str = "test", config: str | None = None, style: str = "codeblock-think",
               max_rows: int | None = None) -> list[EvalItem]:
    """Test rows (``src_text``, ``src_lang``, ``trg_lang``, optional ``trg_text``) as :class:`EvalItem`s."""
    from ..data.mt_builders import REQUIRED_COLUMNS, load_mt_rows

    try:
        rows = load_mt_rows(data, split=split, config=config)
    except ValueError:
        if split == "test":  # a folder / hub dataset without a test split
            rows = load_mt_rows(data, split="train", config=config)
        else:
            raise
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(f"{data}: missing columns {missing} (have {rows.column_names})")
    items = []
    for index, row in enumerate(rows):
        if max_rows is not None and index >= max_rows:
            break
        reference = row.get("trg_text")
        items.append(EvalItem(
            index=index,
            src_text=str(row["src_text"]),
            src_lang=str(row["src_lang"]),
            trg_lang=str(row["trg_lang"]),
            reference=None if reference is None else str(reference),
            prompt=build_mt_prompt(str(row["src_text"]), str(row["src_lang"]), str(row["trg_lang"]), style),
        ))
    return items


# -- generation ----------------------------------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    num_samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 2048
    seed: int = 0
    batch_size: int = 16
    chat_template: bool = True


def _render_prompts(tokenizer, prompts: Sequence[str], chat_template: bool) -> list[str]:
    if chat_template and getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    return list(prompts)


def generate_transformers(model: str, prompts: Sequence[str], settings: GenerationSettings, dtype: str = "auto",
                          device: str | None = None) -> list[list[str]]:
    """k answers per prompt with ``AutoModelForCausalLM.generate`` (left padding, batched)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()
    texts = _render_prompts(tokenizer, prompts, settings.chat_template)
    sample = settings.temperature > 0
    torch.manual_seed(settings.seed)
    answers: list[list[str]] = []
    for start in range(0, len(texts), settings.batch_size):
        chunk = texts[start : start + settings.batch_size]
        encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            output = lm.generate(
                **encoded,
                max_new_tokens=settings.max_new_tokens,
                do_sample=sample,
                temperature=settings.temperature if sample else None,
                top_p=settings.top_p if sample else None,
                top_k=None,
                num_return_sequences=settings.num_samples,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for i in range(len(chunk)):
            answers.append(decoded[i * settings.num_samples : (i + 1) * settings.num_samples])
    del lm
    gc.collect()
    return answers


def generate_vllm(model: str, prompts: Sequence[str], settings: GenerationSettings, dtype: str = "auto",
                  tensor_parallel_size: int = 1, max_model_len: int | None = None,
                  gpu_memory_utilization: float = 0.9, enforce_eager: bool = False) -> list[list[str]]:
    """k answers per prompt with an in-process ``vllm.LLM`` (released again before returning)."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
              gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager, seed=settings.seed)
    try:
        tokenizer = llm.get_tokenizer()
        texts = _render_prompts(tokenizer, prompts, settings.chat_template)
        inputs = [TokensPrompt(prompt_token_ids=tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        params = SamplingParams(n=settings.num_samples, temperature=settings.temperature, top_p=settings.top_p,
                                max_tokens=settings.max_new_tokens, seed=settings.seed)
        results = llm.generate(inputs, params, use_tqdm=False)
        return [[o.text for o in result.outputs] for result in results]
    finally:
        del llm
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            torch.cuda.empty_cache()


# -- metrics -------------------------------------------------------------------------------------------------------


def bleu_tokenizer(trg_lang: str) -> str:
    """sacrebleu tokenizer for a target language: ``zh`` for Chinese, MeCab-based ones for Japanese/Korean when
    installed (else ``char``), ``13a`` otherwise."""
    from ..data.mt_builders import base_code

    code = base_code(trg_lang)
    if code == "zh":
        return "zh"
    if code == "ja":
        return "ja-mecab" if importlib.util.find_spec("MeCab") and importlib.util.find_spec("ipadic") else "char"
    if code == "ko":
        return "ko-mecab" if importlib.util.find_spec("mecab_ko") else "char"
    return "13a"


def corpus_metrics(hypotheses: Sequence[str], references: Sequence[str], trg_lang: str) -> dict[str, Any]:
    """Corpus BLEU and chrF++ (sacrebleu), with signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu = BLEU(tokenize=bleu_tokenizer(trg_lang))
    chrf = CHRF(word_order=2)
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": bleu_score.score,
        "bleu_signature": bleu.get_signature().format(),
        "chrf++": chrf_score.score,
        "chrf++_signature": chrf.get_signature().format(),
    }


def comet_scores(items: Sequence[EvalItem], model_name: str, batch_size: int = 16) -> dict[str, Any]:
    """Segment COMET scores written into ``items`` (rows with a reference); returns ``{"status", ...}``."""
    if importlib.util.find_spec("comet") is None:
        return {"status": "skipped", "reason": "unbabel-comet is not installed (pip install unbabel-comet)"}
    scored = [item for item in items if item.reference is not None]
    if not scored:
        return {"status": "skipped", "reason": "no references"}
    try:
        from comet import download_model, load_from_checkpoint

        path = model_name if os.path.exists(model_name) else download_model(model_name)
        if os.path.isdir(path):
            path = os.path.join(path, "checkpoints", "model.ckpt")
        model = load_from_checkpoint(path)
    except Exception as error:  # offline, gated model, bad path ...
        return {"status": "skipped", "reason": f"COMET model {model_name!r} could not be loaded: "
                f"{type(error).__name__}: {error}"}
    import torch

    data = [{"src": item.src_text, "mt": item.hypothesis, "ref": item.reference} for item in scored]
    output = model.predict(data, batch_size=batch_size, gpus=1 if torch.cuda.is_available() else 0,
                           progress_bar=False)
    for item, score in zip(scored, output.scores):
        item.comet = float(score)
    return {"status": "ok", "model": model_name, "system_score": float(output.system_score)}


@dataclass
class JudgeSettings:
    model: str
    backend: str = "openai"
    base_url: list[str] | None = None
    mode: str = "reference"
    temperature: float = 0.0
    max_tokens: int = 4096
    max_parse_retries: int = 2
    seed: int = 0
    audit_log: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def judge_items(items: Sequence[EvalItem], settings: JudgeSettings) -> dict[str, Any]:
    """Score the hypotheses with a GRRM judge (see the module docstring for the two modes); writes
    ``item.judge`` and returns run-level counts."""
    from ..rewards import GroupRelativeRewardFunction

    if settings.mode not in ("reference", "samples"):
        raise ValueError(f"judge mode must be 'reference' or 'samples', got {settings.mode!r}")
    if settings.mode == "samples":
        size = len(items[0].hypotheses) if items else 0
        if size < 2:
            raise ValueError("--judge-mode samples needs --num-samples >= 2")
        eligible = list(items)
    else:
        size = 2
        eligible = [item for item in items if item.reference is not None]
    reward = GroupRelativeRewardFunction(
        judge_model=settings.model,
        backend=settings.backend,
        base_url=settings.base_url,
        num_generations=size,
        extractor="full",  # the candidates are already extracted translations
        score_scale=1.0,
        invalid_completion_reward=None,
        unjudged_reward=None,
        temperature=settings.temperature,
        max_judge_tokens=settings.max_tokens,
        max_parse_retries=settings.max_parse_retries,
        seed=settings.seed,
        shuffle_candidates=True,  # position-bias control: each group in its own seeded order
        audit_log_path=settings.audit_log,
        name="grrm_eval_judge",
        **settings.extra,
    )
    batch: dict[str, list[Any]] = defaultdict(list)
    asked: list[EvalItem] = []
    counts = {"judged_groups": 0, "unjudged_groups": 0, "ties_identical": 0, "extraction_failed": 0}
    for item in eligible:
        if settings.mode == "reference":
            if item.hypotheses[0] is None:
                item.judge = {"hypothesis": 0.0, "reference": None, "outcome": "loss", "note": "extraction failed"}
                counts["extraction_failed"] += 1
                continue
            if " ".join(item.hypotheses[0].split()) == " ".join(item.reference.split()):
                item.judge = {"hypothesis": None, "reference": None, "outcome": "tie", "note": "identical to reference"}
                counts["ties_identical"] += 1
                continue
            candidates = [item.hypotheses[0], item.reference]
        else:
            candidates = [h if h is not None else "" for h in item.hypotheses]
        asked.append(item)
        for candidate in candidates:
            batch["prompts"].append(f"{item.index}:{item.src_text}")
            batch["completions"].append(candidate)
            batch["src_text"].append(item.src_text)
            batch["src_lang"].append(item.src_lang)
            batch["trg_lang"].append(item.trg_lang)
    metrics: dict[str, float] = {}
    rewards = reward(**batch, log_metric=metrics.__setitem__) if asked else []
    for position, item in enumerate(asked):
        scores = rewards[position * size : (position + 1) * size]
        if settings.mode == "reference":
            hyp, ref = scores
            if hyp is None or ref is None:
                item.judge = {"hypothesis": None, "reference": None, "outcome": None, "note": "judge gave no scores"}
                counts["unjudged_groups"] += 1
                continue
            outcome = "win" if hyp > ref else ("tie" if hyp == ref else "loss")
            item.judge = {"hypothesis": hyp, "reference": ref, "outcome": outcome}
        else:
            # Failed extractions score 0; everything else comes from the judge (None: the group was not scored).
            per_sample = [0.0 if h is None else s for h, s in zip(item.hypotheses, scores)]
            if any(s is None for s in per_sample):
                item.judge = {"scores": per_sample, "note": "judge gave no scores (or all samples identical)"}
                counts["unjudged_groups"] += 1
                continue
            item.judge = {"scores": per_sample}
        counts["judged_groups"] += 1
    prefix = reward.config.name + "/"
    return {
        "mode": settings.mode,
        "model": settings.model,
        "backend": settings.backend,
        **counts,
        "judge_calls": metrics.get(prefix + "judge_calls", 0.0),
        "parse_failure_rate": metrics.get(prefix + "parse_failure_rate", 0.0),
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def pair_judge_summary(items: Sequence[EvalItem], mode: str) -> dict[str, Any]:
    judged = [item.judge for item in items if item.judge is not None]
    if mode == "reference":
        outcomes = [j["outcome"] for j in judged if j.get("outcome") is not None]
        hyp = [j["hypothesis"] for j in judged if j.get("hypothesis") is not None]
        ref = [j["reference"] for j in judged if j.get("reference") is not None]
        return {
            "judge_hypothesis_mean": _mean(hyp),
            "judge_reference_mean": _mean(ref),
            "judge_win_rate": _mean([o == "win" for o in outcomes]),
            "judge_tie_rate": _mean([o == "tie" for o in outcomes]),
            "judge_groups": len(outcomes),
        }
    scored = [j["scores"] for j in judged if all(s is not None for s in j["scores"])]
    return {
        "judge_mean": _mean([s for scores in scored for s in scores]),
        "judge_spread": _mean([max(scores) - min(scores) for scores in scored]),
        "judge_groups": len(scored),
    }


def summarize(items: Sequence[EvalItem], judge_mode: str | None) -> dict[str, dict[str, Any]]:
    """Per language pair: counts, BLEU, chrF++, COMET and judge means."""
    by_pair: dict[str, list[EvalItem]] = defaultdict(list)
    for item in items:
        by_pair[item.pair].append(item)
    summary: dict[str, dict[str, Any]] = {}
    for pair in sorted(by_pair):
        group = by_pair[pair]
        with_ref = [item for item in group if item.reference is not None]
        entry: dict[str, Any] = {
            "n": len(group),
            "n_with_reference": len(with_ref),
            "extraction_failed": sum(item.hypotheses[0] is None for item in group),
        }
        if with_ref:
            entry.update(corpus_metrics([i.hypothesis for i in with_ref], [i.reference for i in with_ref],
                                        group[0].trg_lang))
        comet = [item.comet for item in with_ref if item.comet is not None]
        entry["comet"] = _mean(comet)
        if judge_mode:
            entry.update(pair_judge_summary(group, judge_mode))
        summary[pair] = entry
    return summary


def macro_average(pairs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    keys = ["bleu", "chrf++", "comet", "judge_hypothesis_mean", "judge_reference_mean", "judge_win_rate",
            "judge_tie_rate", "judge_mean", "judge_spread"]
    average: dict[str, Any] = {"n": sum(p["n"] for p in pairs.values()),
                               "extraction_failed": sum(p["extraction_failed"] for p in pairs.values())}
    for key in keys:
        values = [p[key] for p in pairs.values() if p.get(key) is not None]
        if values:
            average[key] = sum(values) / len(values)
    return average


def render_table(results: dict[str, Any], console=None) -> None:
    """Print the per-pair table with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    judge_mode = (results.get("judge") or {}).get("mode")
    table = Table(title=f"MT evaluation: {results['model']}")
    columns = ["pair", "n", "BLEU", "chrF++", "COMET"]
    if judge_mode == "reference":
        columns += ["judge hyp", "judge ref", "win vs ref"]
    elif judge_mode == "samples":
        columns += ["judge mean", "judge spread"]
    columns.append("extract. failed")
    for column in columns:
        table.add_column(column, justify="left" if column == "pair" else "right")

    def fmt(value: Any, digits: int = 2, percent: bool = False) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{100 * value:.1f}%" if percent else f"{value:.{digits}f}"

    rows = list(results["pairs"].items()) + [("macro avg", results["macro_average"])]
    for pair, entry in rows:
        cells = [pair, str(entry["n"]), fmt(entry.get("bleu")), fmt(entry.get("chrf++")), fmt(entry.get("comet"), 4)]
        if judge_mode == "reference":
            cells += [fmt(entry.get("judge_hypothesis_mean")), fmt(entry.get("judge_reference_mean")),
                      fmt(entry.get("judge_win_rate"), percent=True)]
        elif judge_mode == "samples":
            cells += [fmt(entry.get("judge_mean")), fmt(entry.get("judge_spread"))]
        cells.append(str(entry["extraction_failed"]))
        table.add_row(*cells, end_section=pair == rows[-2][0] if len(rows) > 1 else False)
    console.print(table)
    for name, signatures in results["signatures"].items():
        for signature in sorted(set(signatures.values())):
            console.print(f"{name} signature: {signature}")
    comet = results["comet"]
    console.print(f"COMET: {comet['status']}" + (f" ({comet['reason']})" if comet.get("reason") else
                                                  f" ({comet.get('model')})"))


# -- entry point ---------------------------------------------------------------------------------------------------


def evaluate(
    model: str,
    data: str | Path | None,
    *,
    split: str = "test",
    style: str = "codeblock-think",
    extractor: str | None = None,
    engine: str = "auto",
    generation: GenerationSettings | None = None,
    dtype: str = "auto",
    max_rows: int | None = None,
    vllm_kwargs: dict[str, Any] | None = None,
    comet_model: str | None = DEFAULT_COMET_MODEL,
    judge: JudgeSettings | None = None,
) -> dict[str, Any]:
    """Generate, extract and score; returns the JSON-ready results (see :func:`main`)."""
    import torch

    generation = generation or GenerationSettings()
    if generation.num_samples > 1 and generation.temperature <= 0:
        raise ValueError("--num-samples > 1 needs --temperature > 0 (greedy decoding gives identical samples)")
    if style not in MT_PROMPT_TEMPLATES:
        raise ValueError(f"Unknown style {style!r}; choose one of {sorted(MT_PROMPT_TEMPLATES)}")
    extractor_name = extractor or DEFAULT_EXTRACTOR[style]
    extract = get_extractor(extractor_name)
    if engine == "auto":
        engine = "vllm" if (torch.cuda.is_available() and importlib.util.find_spec("vllm")) else "transformers"
    items = load_items(data, split=split, style=style, max_rows=max_rows)
    if not items:
        raise ValueError(f"{data}: no rows to evaluate")

    started = time.perf_counter()
    prompts = [item.prompt for item in items]
    if engine == "vllm":
        answers = generate_vllm(model, prompts, generation, dtype=dtype, **(vllm_kwargs or {}))
    elif engine == "transformers":
        answers = generate_transformers(model, prompts, generation, dtype=dtype)
    else:
        raise ValueError(f"engine must be 'auto', 'vllm' or 'transformers', got {engine!r}")
    generation_s = time.perf_counter() - started
    for item, responses in zip(items, answers):
        item.responses = list(responses)
        item.hypotheses = [extract(response) for response in responses]

    if comet_model:
        comet = comet_scores(items, comet_model)
    else:
        comet = {"status": "skipped", "reason": "disabled (--no-comet)"}
    judge_summary = judge_items(items, judge) if judge is not None else None
    pairs = summarize(items, judge.mode if judge is not None else None)
    signatures: dict[str, dict[str, str]] = {"BLEU": {}, "chrF++": {}}
    for pair, entry in pairs.items():
        if "bleu_signature" in entry:
            signatures["BLEU"][pair] = entry.pop("bleu_signature")
            signatures["chrF++"][pair] = entry.pop("chrf++_signature")
    return {
        "model": model,
        "data": str(data) if data is not None else "bundled:trl_grrm/data/mt_sample.jsonl",
        "settings": {
            "engine": engine, "style": style, "extractor": extractor_name, "dtype": dtype,
            **{k: getattr(generation, k) for k in generation.__dataclass_fields__},
        },
        "generation_seconds": generation_s,
        "signatures": signatures,
        "comet": comet,
        "judge": judge_summary,
        "pairs": pairs,
        "macro_average": macro_average(pairs),
        "items": [
            {
                "index": item.index, "src_lang": item.src_lang, "trg_lang": item.trg_lang,
                "src_text": item.src_text, "reference": item.reference, "prompt": item.prompt,
                "responses": item.responses, "hypotheses": item.hypotheses,
                "hypothesis": item.hypothesis, "extraction_failed": item.hypotheses[0] is None,
                "comet": item.comet, "judge": item.judge,
            }
            for item in items
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """``trl-grrm eval-mt``."""
    parser = argparse.ArgumentParser(
        prog="trl-grrm eval-mt",
        description="Translate a test set with a model and score it per language pair: BLEU and chrF++ "
        "(sacrebleu), COMET (if unbabel-comet is installed), optionally a GRRM judge.",
    )
    parser.add_argument("--model", required=True, help="Model to evaluate: hub id or local folder")
    parser.add_argument("--data", default=None, help="Test data: .jsonl/.json/.parquet/.csv file, folder or hub id "
                        "(columns src_text, src_lang, trg_lang, optional trg_text). Default: the bundled sample")
    parser.add_argument("--split", default="test", help="Split for folders / hub datasets (falls back to train)")
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--style", default="codeblock-think", choices=sorted(MT_PROMPT_TEMPLATES))
    parser.add_argument("--extractor", default=None, help="Translation extractor (default: the style's)")
    parser.add_argument("--engine", default="auto", choices=["auto", "vllm", "transformers"],
                        help="auto: vllm when a GPU and vllm are available, else transformers")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--num-samples", type=int, default=1, help="Answers per source (the first is scored)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers engine batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-chat-template", action="store_true", help="Send the raw prompt (base models)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm engine")
    parser.add_argument("--max-model-len", type=int, default=None, help="vllm engine")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm engine")
    parser.add_argument("--enforce-eager", action="store_true", help="vllm engine")
    parser.add_argument("--comet-model", default=DEFAULT_COMET_MODEL, help="COMET checkpoint (hub id or path)")
    parser.add_argument("--no-comet", action="store_true")
    parser.add_argument("--judge-model", default=None, help="GRRM judge (served name for openai)")
    parser.add_argument("--judge-backend", default="openai", choices=["openai", "vllm", "transformers"])
    parser.add_argument("--judge-base-url", action="append", default=None,
                        help="Judge server base URL, e.g. http://host:8001/v1 (repeatable)")
    parser.add_argument("--judge-mode", default="reference", choices=["reference", "samples"])
    parser.add_argument("--judge-temperature", type=float, default=0.0)
    parser.add_argument("--judge-max-tokens", type=int, default=4096)
    parser.add_argument("--judge-max-parse-retries", type=int, default=2)
    parser.add_argument("--judge-kwargs", default=None, help="JSON: more GroupRelativeRewardConfig fields")
    parser.add_argument("--output", default=None, help="Write the results (with every hypothesis) to this JSON file")
    args = parser.parse_args(argv)

    vllm_kwargs = dict(tensor_parallel_size=args.tensor_parallel_size, max_model_len=args.max_model_len,
                       gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager)
    judge = None
    if args.judge_model:
        audit = str(Path(args.output).with_suffix(".judge_audit.jsonl")) if args.output else None
        judge = JudgeSettings(
            model=args.judge_model, backend=args.judge_backend, base_url=args.judge_base_url, mode=args.judge_mode,
            temperature=args.judge_temperature, max_tokens=args.judge_max_tokens,
            max_parse_retries=args.judge_max_parse_retries, seed=args.seed, audit_log=audit,
            extra=json.loads(args.judge_kwargs) if args.judge_kwargs else {},
        )
    generation = GenerationSettings(
        num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
        chat_template=not args.no_chat_template,
    )
    random.seed(args.seed)
    results = evaluate(
        args.model, args.data, split=args.split, style=args.style, extractor=args.extractor, engine=args.engine,
        generation=generation, dtype=args.dtype, max_rows=args.max_rows, vllm_kwargs=vllm_kwargs,
        comet_model=None if args.no_comet else args.comet_model, judge=judge,
    )
    render_table(results)
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
        print(f"results (with every hypothesis): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

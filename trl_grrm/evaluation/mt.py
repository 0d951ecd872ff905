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
     judge could not score are left out of the means and counted, per language pair (``judge_unjudged``, the
     table's "judge failed") and by reason for the run (``judge.failures``: ``unavailable``, ``prompt_too_long``,
     ``truncated``, ``parse_failed``, the vocabulary of ``eval-ranking`` and of the reward function's metrics).

Exit status: 0 on success; 1 when a GRRM judge was asked about some groups and scored none of them (the results
are still written; one line on stderr says why); 2 when the judge cannot answer as configured (unknown model,
rejected key: one line naming the URL and the model, no results written).

The GRRM paper's protocol and metrics (docs/reproduction.md): ``--paper`` (greedy, 8192 new tokens, the strict
extractor, ``--runs 4`` averaged), ``--bleurt-checkpoint`` (BLEURT with Google's ``bleurt`` package; skipped with the
reason when it is missing) and ``--llm-judge-model`` (a GEMBA-SQM-style 0-100 judge against the reference, through
the judge engines).

The table (rich) shows one row per language pair plus the macro average; ``--output`` writes everything as JSON,
including every prompt, raw answer, extracted hypothesis and judge score.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import json
import math
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engines.base import JudgeConfigurationError
from ..engines.config import JudgeConfig
from ..scripts.parsing import add_config_argument, add_nested_arguments, apply_aliases, parse_with_config
from ..formats.mt import DEFAULT_EXTRACTOR, MT_PROMPT_TEMPLATES, build_mt_prompt, get_extractor
from ..judging.failures import JUDGE_FAILURES, TOO_FEW_DISTINCT, describe_failures

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
    bleurt: float | None = None
    llm_judge: float | None = None  # GEMBA-SQM-style 0-100 score against the reference

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


def bleurt_scores(items: Sequence[EvalItem], checkpoint: str, batch_size: int = 128) -> dict[str, Any]:
    """Segment BLEURT scores (Google's ``bleurt`` package, as the GRRM paper used) written into ``items`` (rows with
    a reference); returns ``{"status", ...}``. Newlines become spaces first, as in the paper's evaluation.

    ``checkpoint`` is a local BLEURT checkpoint folder, e.g. an unzipped ``BLEURT-20``. Skipped, with the reason,
    when the package is not importable or the folder does not exist.

    Example:
        >>> bleurt_scores([], "no/such/BLEURT-20")["status"]
        'skipped'
    """
    if importlib.util.find_spec("bleurt") is None:
        return {"status": "skipped", "reason": "the bleurt package is not installed "
                "(pip install git+https://github.com/google-research/bleurt.git)"}
    if not os.path.isdir(checkpoint):
        return {"status": "skipped", "reason": f"BLEURT checkpoint folder {checkpoint!r} not found (download and "
                "unzip BLEURT-20, then pass --bleurt-checkpoint PATH)"}
    scored = [item for item in items if item.reference is not None]
    if not scored:
        return {"status": "skipped", "reason": "no references"}
    from bleurt import score as bleurt_score

    def flat(text: str) -> str:
        return " ".join(text.splitlines())

    scorer = bleurt_score.BleurtScorer(checkpoint)
    values = scorer.score(references=[flat(item.reference) for item in scored],
                          candidates=[flat(item.hypothesis) for item in scored], batch_size=batch_size)
    if len(values) != len(scored):
        raise RuntimeError(f"BLEURT returned {len(values)} scores for {len(scored)} segments")
    for item, value in zip(scored, values):
        item.bleurt = float(value)
    return {"status": "ok", "checkpoint": checkpoint}


def llm_judge_scores(items: Sequence[EvalItem], judge: JudgeConfig, engine: Any = None) -> dict[str, Any]:
    """Score each first-sample hypothesis against its reference with a GEMBA-SQM-style prompt
    (:class:`trl_grrm.judging.GembaSQMJudge`), writing ``item.llm_judge`` (0-100).

    Batching, re-asks and failure reasons come from the judging core (:class:`trl_grrm.judging.JudgeRunner`): every
    hypothesis is a one-candidate group with its reference. A failed extraction is not sent and scores 0 (the paper
    scored its "Translation Failed." placeholder instead). ``judge`` gives the engine, sampling, re-asks and prompt
    limit (``eval-mt`` applies the paper's :data:`LLM_JUDGE_DEFAULTS`); ``engine`` overrides the one it describes
    (tests, or an engine shared with the GRRM judge). An engine built here is closed before returning.

    Example:
        >>> items = [EvalItem(0, "Hello.", "en", "de", "Hallo.", "p", hypotheses=["Hallo."])]
        >>> llm_judge_scores(items, JudgeConfig(model="judge", base_url=["http://judge:8000/v1"]))  # doctest: +SKIP
        {'status': 'ok', 'model': 'judge', 'backend': 'openai', ..., 'judged': 1, 'extraction_failed': 0}
    """
    from ..engines import build_engine
    from ..judging import GembaSQMJudge, JudgeGroup, JudgeTask

    scored = [item for item in items if item.reference is not None]
    if not scored:
        return {"status": "skipped", "reason": "no references"}
    own_engine = engine is None
    if own_engine:
        engine = build_engine(judge.engine_config())
    counts: dict[str, int] = {"judged": 0, "extraction_failed": 0}
    tasks: list[tuple[EvalItem, JudgeTask]] = []
    for item in scored:
        if item.hypotheses and item.hypotheses[0] is None:
            item.llm_judge = 0.0
            counts["extraction_failed"] += 1
            continue
        group = JudgeGroup(item.src_text, [item.hypothesis], item.src_lang, item.trg_lang, item.reference, item.index)
        tasks.append((item, JudgeTask(group)))
    try:
        judge.runner(engine).run(GembaSQMJudge(), [task for _, task in tasks])
    finally:
        if own_engine:
            engine.close()
    for item, task in tasks:
        if task.scores is None:
            key = f"failed_{task.failure}"
            counts[key] = counts.get(key, 0) + 1
            continue
        item.llm_judge = task.scores[0]
        counts["judged"] += 1
    return {"status": "ok", "model": judge.model, "backend": judge.backend,
            "prompt": "GEMBA-SQM style with reference, written from the paper's description (not its exact text)",
            **counts}


@dataclass
class JudgeSettings:
    """The GRRM judge of ``eval-mt``: ``judge`` (engine, sampling, re-asks; a vLLM judge gets the GPU to itself unless
    ``judge.gpu_memory_utilization`` is set), how it is asked (``mode``), its audit log, and ``extra``
    :class:`~trl_grrm.rewards.GroupRelativeRewardConfig` fields (``--reward_kwargs``).

    Example:
        >>> JudgeSettings(JudgeConfig(model="grrm", base_url=["http://judge:8000/v1"]), mode="samples").judge.backend
        'openai'
    """

    judge: JudgeConfig
    mode: str = "reference"
    audit_log: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def judge_items(items: Sequence[EvalItem], settings: JudgeSettings, engine: Any = None) -> dict[str, Any]:
    """Score the hypotheses with a GRRM judge (see the module docstring for the two modes); writes
    ``item.judge`` and returns run-level counts.

    The judge's fields are :class:`~trl_grrm.rewards.GroupRelativeRewardConfig`'s (``settings.extra`` holds more of
    them, from ``--judge-kwargs``), and it judges through the same core as the reward function
    (:class:`trl_grrm.judging.JudgeRunner`): identical candidates are judged once, each group in its own seeded order.
    ``engine`` overrides the one the settings describe; an engine built here is closed before returning.
    """
    from ..engines import VLLM_MEMORY_SHARE, build_engine
    from ..judging import JudgeGroup, JudgeTask, attempt_counts, distinct_candidates
    from ..rewards.group_relative import GroupRelativeRewardConfig

    if settings.mode not in ("reference", "samples"):
        raise ValueError(f"judge mode must be 'reference' or 'samples', got {settings.mode!r}")
    if settings.mode == "samples":
        size = len(items[0].hypotheses) if items else 0
        if size < 2:
            raise ValueError("--judge_mode samples needs --num_samples >= 2")
        eligible = list(items)
    else:
        eligible = [item for item in items if item.reference is not None]
    judge = settings.judge
    # The judge runs after generation, with the GPU to itself (the reward function's default shares it).
    judge = dataclasses.replace(judge, gpu_memory_utilization=judge.gpu_memory_utilization or VLLM_MEMORY_SHARE)
    config = GroupRelativeRewardConfig(judge=judge, name="grrm_eval_judge", audit_log_path=settings.audit_log,
                                       **settings.extra)
    seed = config.judge.seed or 0
    counts = {"judged_groups": 0, "unjudged_groups": 0, "ties_identical": 0, "extraction_failed": 0}
    reasons: dict[str, int] = dict.fromkeys((*JUDGE_FAILURES, TOO_FEW_DISTINCT), 0)
    # Per asked item: its candidates, each candidate's index among the distinct ones (None: failed extraction),
    # and the core's task (None: fewer than two distinct candidates, nothing to compare).
    asked: list[tuple[EvalItem, list[str | None], list[int | None], Any]] = []
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
            candidates: list[str | None] = [item.hypotheses[0], item.reference]
        else:
            candidates = [h if h is not None and h.strip() else None for h in item.hypotheses]
        distinct, members = distinct_candidates(candidates)
        task = None
        if len(distinct) >= 2:
            order = list(range(len(distinct)))
            random.Random(f"{seed}-{item.index}").shuffle(order)  # position-bias control, seeded per item
            task = JudgeTask(JudgeGroup(item.src_text, distinct, item.src_lang, item.trg_lang, key=item.index), order)
        asked.append((item, candidates, members, task))
    tasks = [task for *_, task in asked if task is not None]
    if tasks:
        own_engine = engine is None
        engine = engine or build_engine(config.engine_config())
        try:
            config.judge_runner(engine).run(config.judge_format(), tasks)
        finally:
            if own_engine:
                engine.close()
    audit: list[dict[str, Any]] = []
    for item, candidates, members, task in asked:
        unjudged = TOO_FEW_DISTINCT if task is None else task.failure
        scores = None if task is None or task.scores is None else [
            None if m is None else float(task.scores[m]) for m in members
        ]  # fmt: skip
        audit.append({
            "item": item.index, "mode": settings.mode, "source": item.src_text, "source_language": item.src_lang,
            "target_language": item.trg_lang, "candidates": candidates,
            "judged_candidates": list(task.group.candidates) if task else [], "order": task.order if task else None,
            "scores": scores, "unjudged_reason": unjudged,
            "attempts": [{"request": r.messages, **a} for r in (task.requests if task else []) for a in r.attempts],
        })  # fmt: skip
        if scores is None:
            reasons[unjudged] += 1
            counts["unjudged_groups"] += 1
            if settings.mode == "reference":
                item.judge = {"hypothesis": None, "reference": None, "outcome": None, "note": "judge gave no scores",
                              "unjudged": True}
            else:
                item.judge = {"scores": [0.0 if h is None else None for h in item.hypotheses],
                              "note": "judge gave no scores (or all samples identical)", "unjudged": True}
            continue
        if settings.mode == "reference":
            hyp, ref = scores
            outcome = "win" if hyp > ref else ("tie" if hyp == ref else "loss")
            item.judge = {"hypothesis": hyp, "reference": ref, "outcome": outcome}
        else:
            # Failed extractions score 0 (the floor of the 0-10 scale) without a judge call.
            item.judge = {"scores": [0.0 if s is None else s for s in scores]}
        counts["judged_groups"] += 1
    if config.audit_log_path and audit:
        Path(config.audit_log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(config.audit_log_path, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in audit)
    attempts = attempt_counts([a for task in tasks for r in task.requests for a in r.attempts])
    return {
        "mode": settings.mode,
        "model": config.judge.model,
        "backend": config.judge.backend,
        "base_url": config.judge.base_url,
        **counts,
        # Why groups got no scores, in the vocabulary of eval-ranking and the reward's metrics.
        "failures": {reason: reasons[reason] for reason in JUDGE_FAILURES},
        "too_few_distinct": reasons[TOO_FEW_DISTINCT],
        "judge_calls": float(attempts["judge_calls"]),
        "request_retries": attempts["request_retries"],
        "parse_failure_rate": attempts["parse_failures"] / attempts["answers"] if attempts["answers"] else 0.0,
        "truncated_rate": attempts["truncated_answers"] / attempts["received"] if attempts["received"] else 0.0,
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def judge_line(summary: dict[str, Any]) -> str:
    """One line on the GRRM judge's run: ``judge: 3 of 4 groups judged (1 unavailable)``."""
    asked = summary["judged_groups"] + summary["unjudged_groups"]
    reasons = describe_failures({**summary.get("failures", {}), TOO_FEW_DISTINCT: summary.get("too_few_distinct", 0)})
    return f"judge: {summary['judged_groups']} of {asked} groups judged" + (f" ({reasons})" if reasons else "")


def nothing_judged(runs: Sequence[dict[str, Any]]) -> str | None:
    """Why the GRRM judge scored none of the groups sent to it in any run, or ``None`` when it scored some (or was
    not asked: every hypothesis failed extraction or equals its reference)."""
    summaries = [run["judge"] for run in runs if run.get("judge")]
    asked = sum(s["judged_groups"] + s["unjudged_groups"] for s in summaries)
    if not summaries or asked == 0 or any(s["judged_groups"] for s in summaries):
        return None
    first = summaries[0]
    where = f" at {', '.join(first['base_url'])}" if first.get("base_url") else f" ({first['backend']})"
    counts: dict[str, int] = {}
    for summary in summaries:
        for reason, count in [*summary["failures"].items(), (TOO_FEW_DISTINCT, summary.get("too_few_distinct", 0))]:
            counts[reason] = counts.get(reason, 0) + count
    return (f"no item could be judged: the judge {first['model']!r}{where} scored none of the {asked} groups sent to "
            f"it ({describe_failures(counts)}); see the warnings above and the judge audit log")


def pair_judge_summary(items: Sequence[EvalItem], mode: str) -> dict[str, Any]:
    judged = [item.judge for item in items if item.judge is not None]
    unjudged = sum(bool(j.get("unjudged")) for j in judged)
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
            "judge_unjudged": unjudged,
        }
    scored = [j["scores"] for j in judged if all(s is not None for s in j["scores"])]
    return {
        "judge_mean": _mean([s for scores in scored for s in scores]),
        "judge_spread": _mean([max(scores) - min(scores) for scores in scored]),
        "judge_groups": len(scored),
        "judge_unjudged": unjudged,
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
        entry["bleurt"] = _mean([item.bleurt for item in with_ref if item.bleurt is not None])
        entry["llm_judge"] = _mean([item.llm_judge for item in with_ref if item.llm_judge is not None])
        if judge_mode:
            entry.update(pair_judge_summary(group, judge_mode))
        summary[pair] = entry
    return summary


def macro_average(pairs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    keys = ["bleu", "chrf++", "comet", "bleurt", "llm_judge", "judge_hypothesis_mean", "judge_reference_mean",
            "judge_win_rate", "judge_tie_rate", "judge_mean", "judge_spread"]
    average: dict[str, Any] = {"n": sum(p["n"] for p in pairs.values()),
                               "extraction_failed": sum(p["extraction_failed"] for p in pairs.values())}
    for key in keys:
        values = [p[key] for p in pairs.values() if p.get(key) is not None]
        if values:
            average[key] = sum(values) / len(values)
    if any("judge_unjudged" in p for p in pairs.values()):  # a count: summed, not averaged
        average["judge_unjudged"] = sum(p.get("judge_unjudged", 0) for p in pairs.values())
    return average


def render_table(results: dict[str, Any], console=None) -> None:
    """Print the per-pair table with rich."""
    from rich.console import Console
    from rich.table import Table

    # Logs and CI captures are not terminals; rich would squeeze the table into 80 columns there.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    judge_mode = (results.get("judge") or {}).get("mode")
    table = Table(title=f"MT evaluation: {results['model']}")
    columns = ["pair", "n", "BLEU", "chrF++", "COMET"]
    extra_metrics = [(key, label) for key, label in (("bleurt", "BLEURT"), ("llm_judge", "LLM judge"))
                     if any(entry.get(key) is not None for entry in results["pairs"].values())]
    columns += [label for _, label in extra_metrics]
    if judge_mode == "reference":
        columns += ["judge hyp", "judge ref", "win vs ref"]
    elif judge_mode == "samples":
        columns += ["judge mean", "judge spread"]
    if judge_mode:
        columns.append("judge failed")
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
        cells += [fmt(entry.get(key), 4 if key == "bleurt" else 2) for key, _ in extra_metrics]
        if judge_mode == "reference":
            cells += [fmt(entry.get("judge_hypothesis_mean")), fmt(entry.get("judge_reference_mean")),
                      fmt(entry.get("judge_win_rate"), percent=True)]
        elif judge_mode == "samples":
            cells += [fmt(entry.get("judge_mean")), fmt(entry.get("judge_spread"))]
        if judge_mode:
            cells.append(fmt(entry.get("judge_unjudged"), 0))
        cells.append(str(entry["extraction_failed"]))
        table.add_row(*cells, end_section=pair == rows[-2][0] if len(rows) > 1 else False)
    console.print(table)
    for name, signatures in results["signatures"].items():
        for signature in sorted(set(signatures.values())):
            console.print(f"{name} signature: {signature}")
    if judge_mode:
        console.print(judge_line(results["judge"]))
    comet = results["comet"]
    console.print(f"COMET: {comet['status']}" + (f" ({comet['reason']})" if comet.get("reason") else
                                                  f" ({comet.get('model')})"))
    for name, key in (("BLEURT", "bleurt"), ("LLM judge", "llm_judge")):
        status = results.get(key)
        if status:
            console.print(f"{name}: {status['status']}" + (f" ({status['reason']})" if status.get("reason") else ""))
    if results.get("runs"):
        console.print(f"mean over {len(results['runs'])} runs (seeds {[r['seed'] for r in results['runs']]}); "
                      "per-run numbers and the standard deviation are in the JSON output")


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
    bleurt_checkpoint: str | None = None,
    llm_judge: JudgeConfig | None = None,
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
    bleurt = bleurt_scores(items, bleurt_checkpoint) if bleurt_checkpoint else None
    llm_judge_summary = llm_judge_scores(items, llm_judge) if llm_judge is not None else None
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
        "bleurt": bleurt,
        "llm_judge": llm_judge_summary,
        "judge": judge_summary,
        "pairs": pairs,
        "macro_average": macro_average(pairs),
        "items": [
            {
                "index": item.index, "src_lang": item.src_lang, "trg_lang": item.trg_lang,
                "src_text": item.src_text, "reference": item.reference, "prompt": item.prompt,
                "responses": item.responses, "hypotheses": item.hypotheses,
                "hypothesis": item.hypothesis, "extraction_failed": item.hypotheses[0] is None,
                "comet": item.comet, "bleurt": item.bleurt, "llm_judge": item.llm_judge, "judge": item.judge,
            }
            for item in items
        ],
    }


PAPER_PRESET: dict[str, Any] = {
    "temperature": 0.0,
    "top_p": 1.0,
    "num_samples": 1,
    "max_new_tokens": 8192,
    "extractor": "codeblock_strict",
    "runs": 4,
    "bleurt_checkpoint": "BLEURT-20",
}
"""``--paper``: the GRRM paper's MT evaluation protocol (greedy, up to 8192 new tokens, 4 runs averaged, BLEURT-20),
with the training reward's strict one-code-block extractor."""


def apply_paper_preset(args: argparse.Namespace, argv: Sequence[str]) -> list[str]:
    """Set :data:`PAPER_PRESET` on ``args`` wherever the command line ``argv`` did not set the option itself;
    returns one note per value set.

    Example:
        >>> args = argparse.Namespace(temperature=0.7, top_p=1.0, num_samples=1, max_new_tokens=2048,
        ...                           extractor=None, runs=1, bleurt_checkpoint=None)
        >>> notes = apply_paper_preset(args, ["--temperature", "0.7"])
        >>> args.temperature, args.max_new_tokens, args.extractor, args.runs
        (0.7, 8192, 'codeblock_strict', 4)
    """
    notes = []
    for key, value in PAPER_PRESET.items():
        flag = "--" + key
        spellings = (flag, "--" + key.replace("_", "-"))  # the hyphenated spelling is still accepted
        if any(token == f or token.startswith(f + "=") for token in argv for f in spellings):
            continue
        if getattr(args, key) != value:
            setattr(args, key, value)
            notes.append(f"--paper: {flag} {value}")
    return notes


def combine_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs of :func:`evaluate`: every numeric per-pair metric is the mean over the runs
    (with equal items per run this is the paper's mean over runs x items); ``runs`` keeps each run's numbers and
    ``macro_average_std`` the spread of the macro averages. Items, statuses and signatures are the first run's.

    Example:
        >>> one = {"settings": {"seed": 0}, "pairs": {"en-de": {"n": 2, "extraction_failed": 0, "bleu": 10.0}}}
        >>> two = {"settings": {"seed": 1}, "pairs": {"en-de": {"n": 2, "extraction_failed": 1, "bleu": 20.0}}}
        >>> combine_runs([one, two])["pairs"]["en-de"]["bleu"]
        15.0
    """
    if len(runs) == 1:
        return dict(runs[0])
    combined = dict(runs[0])
    pairs: dict[str, dict[str, Any]] = {}
    for pair, first in runs[0]["pairs"].items():
        entry = dict(first)
        for key, value in first.items():
            values = [run["pairs"].get(pair, {}).get(key) for run in runs]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                entry[key] = sum(values) / len(values)
        pairs[pair] = entry
    combined["pairs"] = pairs
    combined["macro_average"] = macro_average(pairs)
    per_run = [macro_average(run["pairs"]) for run in runs]
    combined["macro_average_std"] = {
        key: statistics.stdev([m[key] for m in per_run])
        for key in combined["macro_average"]
        if all(isinstance(m.get(key), (int, float)) for m in per_run)
    }
    combined["runs"] = [
        {"seed": run["settings"].get("seed"), "pairs": run["pairs"], "macro_average": run.get("macro_average"),
         "generation_seconds": run.get("generation_seconds")}
        for run in runs
    ]
    return combined


#: The LLM judge's defaults: the paper's evaluation sampling (temperature 0.4, top_p 0.7, up to 6 re-asks at a
#: higher temperature); answers that never parse are left out of the mean and counted, as in the paper.
LLM_JUDGE_DEFAULTS: dict[str, Any] = {"temperature": 0.4, "top_p": 0.7, "max_tokens": 8192, "max_parse_retries": 6}

#: eval-mt's flags from before the nested judge options, still accepted (hidden from --help).
LEGACY_FLAGS: dict[str, str] = {
    "--judge_model": "--judge.model", "--judge_backend": "--judge.backend", "--judge_base_url": "--judge.base_url",
    "--judge_temperature": "--judge.temperature", "--judge_max_tokens": "--judge.max_tokens",
    "--judge_max_parse_retries": "--judge.max_parse_retries", "--judge_kwargs": "--reward_kwargs",
    "--llm_judge_model": "--llm_judge.model", "--llm_judge_backend": "--llm_judge.backend",
    "--llm_judge_base_url": "--llm_judge.base_url", "--llm_judge_temperature": "--llm_judge.temperature",
    "--llm_judge_top_p": "--llm_judge.top_p", "--llm_judge_max_tokens": "--llm_judge.max_tokens",
    "--llm_judge_max_retries": "--llm_judge.max_parse_retries",
}  # fmt: skip


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    return parse_with_config(parser, argv, nested={"judge": JudgeConfig, "llm_judge": JudgeConfig},
                             aliases=LEGACY_FLAGS, nested_defaults={
                                 "judge": {"seed": lambda namespace: namespace.seed},
                                 "llm_judge": {**LLM_JUDGE_DEFAULTS, "seed": lambda namespace: namespace.seed},
                             })  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``trl-grrm eval-mt`` parser (read it with :func:`parse_args`, which applies ``--config`` and builds the
    ``judge`` and ``llm_judge`` configs)."""
    parser = argparse.ArgumentParser(
        prog="trl-grrm eval-mt",
        description="Translate a test set with a model and score it per language pair: BLEU and chrF++ "
        "(sacrebleu), COMET (if unbabel-comet is installed), optionally a GRRM judge.",
    )
    parser.add_argument("--model", required=True, help="Model to evaluate: hub id or local folder")
    parser.add_argument("--data", default=None, help="Test data: .jsonl/.json/.parquet/.csv file, folder or hub id "
                        "(columns src_text, src_lang, trg_lang, optional trg_text). Default: the bundled sample")
    parser.add_argument("--split", default="test", help="Split for folders / hub datasets (falls back to train)")
    parser.add_argument("--max_rows", type=int, default=None)
    parser.add_argument("--style", default="codeblock-think", choices=sorted(MT_PROMPT_TEMPLATES))
    parser.add_argument("--extractor", default=None, help="Translation extractor (default: the style's)")
    parser.add_argument("--engine", default="auto", choices=["auto", "vllm", "transformers"],
                        help="auto: vllm when a GPU and vllm are available, else transformers")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--num_samples", type=int, default=1, help="Answers per source (the first is scored)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--max_new_tokens", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=16, help="transformers engine batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_chat_template", action="store_true", help="Send the raw prompt (base models)")
    parser.add_argument("--tensor_parallel_size", type=int, default=1, help="vllm engine")
    parser.add_argument("--max_model_len", type=int, default=None, help="vllm engine")
    parser.add_argument("--gpu_memory_utilization", type=float, default=0.9, help="vllm engine")
    parser.add_argument("--enforce_eager", action="store_true", help="vllm engine")
    parser.add_argument("--comet_model", default=DEFAULT_COMET_MODEL, help="COMET checkpoint (hub id or path)")
    parser.add_argument("--no_comet", action="store_true")
    parser.add_argument("--judge_mode", default="reference", choices=["reference", "samples"],
                        help="GRRM judge (judge.model set): each hypothesis against its reference, or the samples "
                        "of each source against each other")
    parser.add_argument("--reward_kwargs", default=None, type=json.loads, metavar="JSON",
                        help="GRRM judge: more GroupRelativeRewardConfig fields, e.g. '{\"shuffle_candidates\": true}'")
    parser.add_argument("--output", default=None, help="Write the results (with every hypothesis) to this JSON file")
    parser.add_argument("--paper", action="store_true",
                        help="The GRRM paper's protocol where not set explicitly: greedy, --max_new_tokens 8192, the "
                        "strict one-code-block extractor, --runs 4, BLEURT-20 (docs/reproduction.md)")
    parser.add_argument("--runs", type=int, default=1,
                        help="Generate and score this many times (seeds seed, seed+1, ...); the metrics are the "
                        "means over runs, with each run's numbers and the standard deviation in the JSON")
    parser.add_argument("--bleurt_checkpoint", default=None,
                        help="Local BLEURT checkpoint folder (e.g. BLEURT-20); needs Google's bleurt package")
    # The GRRM judge (--judge.*) and the GEMBA-SQM LLM judge (--llm_judge.*): trl_grrm.engines.JudgeConfig each.
    add_nested_arguments(parser, "judge", JudgeConfig)
    add_nested_arguments(parser, "llm_judge", JudgeConfig)
    add_config_argument(parser)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse an ``eval-mt`` command line (and its ``--config`` YAML): ``args.judge`` (the GRRM judge) and
    ``args.llm_judge`` are :class:`~trl_grrm.engines.JudgeConfig` (their seed defaults to ``--seed``; the LLM
    judge's sampling to :data:`LLM_JUDGE_DEFAULTS`). Raises ``ValueError`` for a judge that cannot work.

    Example:
        >>> args = parse_args(["--model", "m", "--judge.model", "grrm", "--judge.base_url", "http://h/v1"])
        >>> args.judge.backend, args.llm_judge.temperature, args.llm_judge.model
        ('openai', 0.4, None)
    """
    return _parse(build_parser(), list(argv))


def main(argv: list[str] | None = None) -> int:
    """``trl-grrm eval-mt``."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(parser, argv)
    except ValueError as error:  # a judge option that cannot work (e.g. openai without a base_url)
        print(f"trl-grrm eval-mt: error: {error}", file=sys.stderr)
        return 2
    if args.paper:
        for note in apply_paper_preset(args, apply_aliases(argv, LEGACY_FLAGS)):
            print(note)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    llm_judge = args.llm_judge if args.llm_judge.model else None

    vllm_kwargs = dict(tensor_parallel_size=args.tensor_parallel_size, max_model_len=args.max_model_len,
                       gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=args.enforce_eager)
    judge = None
    if args.judge.model:
        audit = str(Path(args.output).with_suffix(".judge_audit.jsonl")) if args.output else None
        judge = JudgeSettings(args.judge, mode=args.judge_mode, audit_log=audit, extra=args.reward_kwargs or {})
    generation = GenerationSettings(
        num_samples=args.num_samples, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
        chat_template=not args.no_chat_template,
    )
    runs = []
    try:
        for run in range(args.runs):
            random.seed(args.seed + run)
            runs.append(evaluate(
                args.model, args.data, split=args.split, style=args.style, extractor=args.extractor, engine=args.engine,
                generation=dataclasses.replace(generation, seed=args.seed + run), dtype=args.dtype,
                max_rows=args.max_rows, vllm_kwargs=vllm_kwargs,
                comet_model=None if args.no_comet else args.comet_model,
                judge=judge, bleurt_checkpoint=args.bleurt_checkpoint, llm_judge=llm_judge,
            ))
    except JudgeConfigurationError as error:  # unknown judge model, rejected key: no retry can help
        print(f"trl-grrm eval-mt: error: {error}", file=sys.stderr)
        return 2
    results = combine_runs(runs)
    render_table(results)
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
        print(f"results (with every hypothesis): {path}")
    problem = nothing_judged(runs) if judge is not None else None
    if problem:
        print(f"trl-grrm eval-mt: error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

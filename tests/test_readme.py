"""The README documents every option of the public configs."""

import dataclasses
from pathlib import Path

import pytest

from trl_grrm.rewards import GroupRelativeRewardConfig
from trl_grrm.trainers import GSPOConfig

README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.parametrize("config", [GroupRelativeRewardConfig])
def test_every_reward_option_is_documented(config):
    missing = [f.name for f in dataclasses.fields(config) if f"`{f.name}`" not in README]
    assert not missing


def test_gspo_options_are_documented():
    own = {f.name for f in dataclasses.fields(GSPOConfig)} - {f.name for f in dataclasses.fields(GSPOConfig.__mro__[1])}
    missing = [name for name in own if f"`{name}`" not in README]
    assert own and not missing


def test_readme_has_the_two_setup_commands():
    assert "bash scripts/setup_cpu.sh && .venv/bin/accelerate launch recipes/grpo_mt.py" in README
    assert "bash scripts/setup_cpu.sh && .venv/bin/python -m pytest" in README

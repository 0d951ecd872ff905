"""How the group reward functions learn the group size: ``num_generations`` when set (checked against the trainer TRL
calls them from), else read from the calling GRPOTrainer with a one-time warning."""

from __future__ import annotations

import logging

import pytest

from trl_grrm.formats.gqm import CANDIDATE_IDS, format_gqm_answer, parse_gqm_prompt
from trl_grrm.rewards import GroupRelativeRewardConfig, GroupRelativeRewardFunction, PairwiseRewardConfig
from trl_grrm.rewards import base
from trl_grrm.testing.scripted_engine import ScriptedEngine


def answer(prompt, attempt, sampling):
    shown = parse_gqm_prompt(prompt).candidates
    return format_gqm_answer("scripted", {cid: len(text) % 11 for cid, text in zip(CANDIDATE_IDS, shown)})


def make(**overrides) -> GroupRelativeRewardFunction:
    settings = dict(judge_model="judge", backend="openai", base_url="http://127.0.0.1:9/v1", extractor="full",
                    max_parse_retries=0)  # fmt: skip
    return GroupRelativeRewardFunction(engine=ScriptedEngine(answer), **{**settings, **overrides})


def call(reward, completions, group_size, log_metric=None, log_extra=None):
    """Call as TRL does: ``completions`` in groups of ``group_size`` consecutive rows sharing a prompt."""
    sources = [f"Source {i // group_size}." for i in range(len(completions))]
    return reward(
        prompts=[f"Translate: {s}" for s in sources], completions=completions,
        completion_ids=[[0] * 3 for _ in completions], trainer_state=None,
        log_metric=log_metric or (lambda name, value: None), log_extra=log_extra or (lambda column, values: None),
        src_text=sources, src_lang=["en"] * len(completions), trg_lang=["de"] * len(completions),
    )  # fmt: skip


def ours(caplog) -> list[logging.LogRecord]:
    """The records of the reward functions' logger (other libraries warn on import)."""
    return [record for record in caplog.records if record.name == base.__name__]


@pytest.fixture
def no_stack_walk(monkeypatch):
    """Fail the test if the reward function walks the call stack."""

    def forbidden():
        raise AssertionError("the call stack was walked")

    monkeypatch.setattr(base, "_find_calling_trainer", forbidden)


@pytest.fixture(scope="module")
def trainer(tiny_model_dir, tmp_path_factory):
    """A real GRPOTrainer (never trained here): groups of 2 in training, 3 in evaluation."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("group_size")), num_generations=2, num_generations_eval=3,
        per_device_train_batch_size=2, per_device_eval_batch_size=3, max_completion_length=4, use_cpu=True,
        report_to="none", save_strategy="no",
    )  # fmt: skip
    data = Dataset.from_dict({"prompt": ["Translate: a", "Translate: b"]})
    # The judge is a stand-in for construction only; each test calls its own reward function with the trainer's
    # callbacks, exactly as GRPOTrainer._calculate_rewards passes them.
    trainer = GRPOTrainer(model=tiny_model_dir, reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
                          args=args, train_dataset=data)  # fmt: skip
    trainer.model.train()  # as in a training step (a loaded model starts in eval mode; TRL reads the mode from it)
    yield trainer
    trainer.model.train()


def test_an_explicit_group_size_is_used_without_walking_the_stack(no_stack_walk, caplog):
    reward = make(num_generations=2)
    with caplog.at_level(logging.WARNING, logger=base.__name__):
        rewards = call(reward, ["a", "bb", "ccc", "dddd"], group_size=2)
    assert rewards == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert len(reward.engine.prompts) == 2  # two groups of 2
    assert not ours(caplog)


def test_an_explicit_group_size_is_checked_against_the_trainer(trainer, no_stack_walk, caplog):
    callbacks = dict(log_metric=trainer._log_metric, log_extra=trainer._log_completion_extra)
    with caplog.at_level(logging.WARNING, logger=base.__name__):
        assert call(make(num_generations=2), ["a", "bb"], 2, **callbacks) == pytest.approx([0.1, 0.2])
    assert not ours(caplog)
    with pytest.raises(ValueError) as raised:
        call(make(num_generations=4), ["a", "bb", "ccc", "dddd"], 4, **callbacks)
    assert str(raised.value) == (
        "GroupRelativeRewardFunction has num_generations=4 but the GRPOTrainer samples groups of 2 in train "
        "(GRPOConfig.num_generations); set GroupRelativeRewardConfig.num_generations to 2, or leave it None to read "
        "it from the trainer."
    )
    trainer._pending_extra_logs.clear()
    trainer._pending_metrics.clear()


def test_evaluation_uses_num_generations_eval(trainer, no_stack_walk):
    callbacks = dict(log_metric=trainer._log_metric, log_extra=trainer._log_completion_extra)
    trainer.model.eval()  # what GRPOTrainer.evaluate does: the reward function sees eval mode
    try:
        reward = make(num_generations=2, num_generations_eval=3)
        assert call(reward, ["a", "bb", "ccc"], 3, **callbacks) == pytest.approx([0.1, 0.2, 0.3])
        assert len(reward.engine.prompts) == 1  # one group of 3
        with pytest.raises(ValueError, match=r"num_generations_eval=2 but the GRPOTrainer samples groups of 3 in eval"):
            call(make(num_generations=2), ["a", "bb", "ccc", "dddd"], 2, **callbacks)
    finally:
        trainer.model.train()
        trainer._pending_extra_logs.clear()
        trainer._pending_metrics.clear()


def test_without_num_generations_the_trainers_value_is_used_and_warned_about_once(trainer, no_stack_walk, caplog):
    reward = make()
    callbacks = dict(log_metric=trainer._log_metric, log_extra=trainer._log_completion_extra)
    with caplog.at_level(logging.WARNING, logger=base.__name__):
        for _ in range(3):
            assert call(reward, ["a", "bb", "ccc", "dddd"], 2, **callbacks) == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert len(reward.engine.prompts) == 6  # groups of 2, read from the trainer
    [record] = ours(caplog)
    assert record.levelno == logging.WARNING
    assert "num_generations is not set, so the group size (2 in train) was read from the calling GRPOTrainer" in (
        record.getMessage()
    )
    assert "GroupRelativeRewardFunction(num_generations=2, ...)" in record.getMessage()
    trainer._pending_extra_logs.clear()
    trainer._pending_metrics.clear()


def test_the_stack_walk_is_the_last_fallback_and_warns_once(trainer, caplog):
    reward = make()

    def _calculate_rewards(self):  # stands in for a trainer method that calls the reward function without callbacks
        return call(reward, ["a", "bb", "ccc", "dddd"], 2)

    with caplog.at_level(logging.WARNING, logger=base.__name__):
        assert _calculate_rewards(trainer) == pytest.approx([0.1, 0.2, 0.3, 0.4])
        _calculate_rewards(trainer)
    [record] = ours(caplog)
    assert "num_generations is not set" in record.getMessage()


def test_without_num_generations_or_a_trainer_it_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"does not know the group size; pass num_generations=\.\.\."):
        call(make(), ["a", "bb"], 2)


def test_a_wrong_explicit_size_outside_a_trainer_still_fails_on_the_groups(no_stack_walk):
    # Without a trainer to compare with, groups of 4 over two prompts are caught by their differing prompts.
    with pytest.raises(ValueError, match="should belong to one group of 4.*is num_generations right"):
        call(make(num_generations=4), ["a", "bb", "ccc", "dddd"], 2)


@pytest.mark.parametrize("config", [GroupRelativeRewardConfig, PairwiseRewardConfig])
def test_group_size_validation(config):
    with pytest.raises(ValueError, match="num_generations must be at least 2"):
        config(judge_model="j", num_generations=1)
    with pytest.raises(ValueError, match="num_generations_eval must be at least 1"):
        config(judge_model="j", num_generations=2, num_generations_eval=0)
    assert config(judge_model="j", num_generations=4, num_generations_eval=1).num_generations_eval == 1

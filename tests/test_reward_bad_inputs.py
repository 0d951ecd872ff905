"""Bad rows and bad calls reach GroupRelativeRewardFunction as clear errors, the same on every process.

The single-process tests are real calls. The cross-process tests run two "ranks" as two threads, each with its own
reward function and engine, with ``trl_grrm.distributed`` patched so that they exchange data through an in-memory
all-gather; a rank that dies before the exchange leaves the other one waiting until a timeout breaks it, as a
closed connection would.
"""

from __future__ import annotations

import math
import threading

import pytest

from trl_grrm import GroupRelativeRewardFunction, distributed
from trl_grrm.engines import JudgeConfigurationError
from trl_grrm.formats.gqm import format_gqm_answer, parse_gqm_prompt
from trl_grrm.testing.scripted_engine import ScriptedEngine


def length_judge(prompt: str, attempt: int, sampling) -> str:
    """Scores each candidate len(text) % 11, like the local judge server."""
    candidates = parse_gqm_prompt(prompt).candidates
    return format_gqm_answer("ok", {cid: len(text) % 11 for cid, text in zip("ABCDEFGH", candidates)})


def make(engine: ScriptedEngine | None = None, **overrides) -> GroupRelativeRewardFunction:
    settings = dict(judge_model="judge", backend="openai", base_url="http://127.0.0.1:9/v1", extractor="full",
                    num_generations=2, max_parse_retries=0)
    return GroupRelativeRewardFunction(engine=engine or ScriptedEngine(length_judge), **{**settings, **overrides})


def batch(n: int = 4) -> dict:
    """TRL's keyword arguments for n completions in groups of 2 (rows 2k and 2k+1 share a prompt)."""
    return dict(
        prompts=[f"prompt {i // 2}" for i in range(n)],
        completions=["x" * (i + 1) for i in range(n)],  # judged len % 11: 0.1, 0.2, ...
        completion_ids=[[0] * 3 for _ in range(n)],
        src_text=[f"source {i // 2}" for i in range(n)],
        src_lang=["en"] * n,
        trg_lang=["de"] * n,
    )


def with_value(kwargs: dict, column: str, row: int, value) -> dict:
    kwargs[column] = list(kwargs[column])
    kwargs[column][row] = value
    return kwargs


# -- one process -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("src_text", None, "None"),
        ("src_text", float("nan"), "nan"),
        ("src_text", "", "''"),
        ("src_lang", None, "None"),
        ("src_lang", math.nan, "nan"),
        ("trg_lang", "  ", "'  '"),
        ("trg_lang", 7, "7"),
    ],
)
def test_missing_values_in_source_columns_name_the_row_and_column(column, value, shown):
    engine = ScriptedEngine(length_judge)
    with pytest.raises(ValueError) as raised:
        make(engine)(**with_value(batch(), column, 3, value))
    message = str(raised.value)
    assert f"row 3 of column {column!r}" in message and shown in message
    assert engine.prompts == []  # nothing reached the judge


@pytest.mark.parametrize("length", [3, 5])
def test_a_column_longer_or_shorter_than_the_batch_is_an_error(length):
    kwargs = batch(4)
    kwargs["src_lang"] = ["en"] * length
    with pytest.raises(ValueError, match=f"column 'src_lang' has {length} values for 4 completions"):
        make()(**kwargs)


def test_completion_ids_of_the_wrong_length_are_an_error():
    kwargs = batch(4)
    kwargs["completion_ids"] = kwargs["completion_ids"][:2]
    with pytest.raises(ValueError, match="2 completion_ids for 4 completions"):
        make()(**kwargs)


@pytest.mark.parametrize(("value", "type_name"), [(None, "NoneType"), (5, "int"), (b"Hallo", "bytes")])
def test_a_completion_that_is_not_text_is_an_error(value, type_name):
    with pytest.raises(ValueError, match=f"completion 1 is a {type_name}; expected a string or a list of messages"):
        make()(**with_value(batch(), "completions", 1, value))


def test_a_message_list_that_is_not_messages_is_an_error():
    with pytest.raises(ValueError, match="completion 2 .*cannot be read: AttributeError"):
        make()(**with_value(batch(), "completions", 2, ["Hallo"]))


def test_good_rows_still_give_the_judges_rewards():
    kwargs = batch(4)
    kwargs["completions"][2] = [{"role": "assistant", "content": "Guten Tag"}]  # conversational completions are fine
    rewards = make()(**kwargs)
    expected = [0.1, 0.2, 0.9, 0.4]  # len("Guten Tag") = 9
    assert rewards == pytest.approx(expected)


# -- two processes -----------------------------------------------------------------------------------------------


def run_two_ranks(monkeypatch, call_on_rank, timeout: float = 5.0) -> list[tuple[str, object]]:
    """Run ``call_on_rank(rank)`` as ranks 0 and 1 (threads) sharing an in-memory all-gather; ("ok"|"error", value)."""
    world = 2
    barrier = threading.Barrier(world, timeout=timeout)
    slots: list[object] = [None] * world
    state = threading.local()

    def all_gather_objects(obj):
        slots[state.rank] = obj
        # BrokenBarrierError after `timeout` when the other rank never comes: the "connection closed" of a real run.
        barrier.wait()
        gathered = list(slots)
        barrier.wait()
        return gathered

    monkeypatch.setattr(distributed, "all_gather_objects", all_gather_objects)
    monkeypatch.setattr(distributed, "process_index", lambda: state.rank)
    monkeypatch.setattr(distributed, "num_processes", lambda: world)
    outcomes: list[tuple[str, object]] = [("hung", None)] * world

    def worker(rank: int) -> None:
        state.rank = rank
        try:
            outcomes[rank] = ("ok", call_on_rank(rank))
        except BaseException as error:  # noqa: BLE001 - the outcome is what the test inspects
            outcomes[rank] = ("error", error)

    threads = [threading.Thread(target=worker, args=(rank,), daemon=True) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout * 3)
    return outcomes


def test_a_bad_row_on_one_process_raises_the_same_clear_error_on_every_process(monkeypatch):
    engines = [ScriptedEngine(length_judge), ScriptedEngine(length_judge)]

    def call(rank):
        kwargs = batch(4)
        if rank == 1:
            with_value(kwargs, "src_lang", 2, None)
        return make(engines[rank])(**kwargs)

    outcomes = run_two_ranks(monkeypatch, call)
    assert [kind for kind, _ in outcomes] == ["error", "error"]
    errors = [error for _, error in outcomes]
    assert all(type(error) is ValueError for error in errors), errors
    assert str(errors[0]) == str(errors[1])
    assert "process 1" in str(errors[0]) and "row 2 of column 'src_lang'" in str(errors[0])
    assert engines[0].prompts == engines[1].prompts == []


def test_two_good_processes_share_the_groups(monkeypatch):
    engines = [ScriptedEngine(length_judge), ScriptedEngine(length_judge)]
    outcomes = run_two_ranks(monkeypatch, lambda rank: make(engines[rank])(**batch(4)))
    assert [kind for kind, _ in outcomes] == ["ok", "ok"]
    expected = [0.1, 0.2, 0.3, 0.4]
    # Both ranks hold the same 4 completions here; each gets the rewards of its own slice of the 8.
    assert outcomes[0][1] == pytest.approx(expected) and outcomes[1][1] == pytest.approx(expected)
    assert len(engines[0].prompts) == len(engines[1].prompts) == 2  # 4 groups, judged 2 per process


def test_a_configuration_error_on_one_process_stops_every_process_with_its_message(monkeypatch):
    message = "judge at http://127.0.0.1:8011/v1 does not serve the model 'grrm' (it serves: 'judge')"

    def refuse(prompt, attempt, sampling):
        raise JudgeConfigurationError(message)

    engines = [ScriptedEngine(length_judge), ScriptedEngine(refuse)]
    outcomes = run_two_ranks(
        monkeypatch, lambda rank: make(engines[rank], on_judge_unavailable="fallback", unjudged_reward=0.0)(**batch(4))
    )
    assert [kind for kind, _ in outcomes] == ["error", "error"]
    for _, error in outcomes:
        assert isinstance(error, JudgeConfigurationError)
        assert str(error) == message

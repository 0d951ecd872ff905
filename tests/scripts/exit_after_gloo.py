"""One rank of tests/test_distributed_exit.py: it joins a gloo group through accelerate (when started as a rank),
leaves it with ``end_training`` and ends with ``exit_process``, marking in MARKS_DIR what ran on the way out.

    python exit_after_gloo.py MARKS_DIR EXIT_CODE
"""

import atexit
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from accelerate import Accelerator

from trl_grrm.distributed import end_training, exit_process


class MarkAtModuleTeardown:
    """A module global whose finaliser runs when the interpreter tears ``__main__`` down, after the atexit handlers."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.open = open  # the builtins may be gone by the time __del__ runs

    def __del__(self) -> None:
        self.open(self.path, "w").close()


def main() -> int:
    marks, code = Path(sys.argv[1]), int(sys.argv[2])
    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    globals()["teardown_mark"] = MarkAtModuleTeardown(marks / f"teardown-{rank}")
    atexit.register((marks / f"atexit-{rank}").touch)

    def finish_late() -> None:
        time.sleep(0.5)
        (marks / f"thread-{rank}").touch()

    threading.Thread(target=finish_late).start()  # not a daemon: exiting waits for it
    accelerator.wait_for_everyone()
    print(f"rank {rank} of {accelerator.num_processes}: buffered", end="")  # stdout is a pipe: not flushed yet
    end_training(SimpleNamespace(accelerator=accelerator))
    return code


if __name__ == "__main__":
    exit_process(main())

"""TCP ports for processes that must be told their port up front (``vllm serve``, torchrun's master port).

A server we write ourselves binds port 0 and reports the port it got (see :class:`~trl_grrm.testing.JudgeServer`);
nothing here is needed for it. A process that only takes ``--port N`` can only be handed a port that was free a
moment ago, and another process may take it in between. :func:`retry_with_fresh_port` is the one answer to that race:
it starts again on a new port when the start failed because the port was taken, a bounded number of times.

Example:
    >>> import subprocess, sys
    >>> run = lambda port: subprocess.run([sys.executable, "-c", f"print({port})"], capture_output=True, text=True)
    >>> proc = retry_with_fresh_port(run, clashed=lambda p: port_clash_in(p.stderr))
    >>> int(proc.stdout) > 0
    True
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# What a port clash looks like in a child's log: Python's OSError, uvicorn, torch's TCPStore (c10d), gloo.
_CLASH_MARKERS = ("address already in use", "eaddrinuse", "errno 98")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it). Another process may take it before you do."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_clash_in(text: str | None) -> bool:
    """Whether a log or an error message says the port was already in use.

    Example:
        >>> port_clash_in("RuntimeError: ... name: EADDRINUSE, message: address already in use")
        True
        >>> port_clash_in("CUDA out of memory")
        False
    """
    lowered = (text or "").lower()
    return any(marker in lowered for marker in _CLASH_MARKERS)


def retry_with_fresh_port(
    start: Callable[[int], T],
    clashed: Callable[[T], bool] = lambda _: False,
    attempts: int = 3,
    host: str = "127.0.0.1",
) -> T:
    """Call ``start(port)`` with a free port; start again on a new port when the port turned out to be taken.

    A clash is either an ``OSError`` with ``errno.EADDRINUSE`` (or whose message says so) raised by ``start``, or a
    result for which ``clashed(result)`` is true (e.g. a subprocess whose stderr says "address already in use").
    After ``attempts`` clashes the last error is raised, or the last result returned, so the caller's own check
    reports it. Any other failure is not retried.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        port = free_port(host)
        try:
            result = start(port)
        except OSError as err:
            if attempt < attempts and (err.errno == errno.EADDRINUSE or port_clash_in(str(err))):
                continue
            raise
        if attempt < attempts and clashed(result):
            continue
        return result
    raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

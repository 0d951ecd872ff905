"""A judge server that misbehaves on purpose, to test how judge engines and their callers handle faults.

:class:`FaultyJudgeServer` is a :class:`~trl_grrm.testing.judge_server.JudgeServer` that answers chat-completion
requests with one fault, for the first ``fault_times`` requests (all of them by default), and answers normally after
that ("500 then OK" is ``fault="server_error", fault_times=1``). The faults:

=================  =================================================================================================
``invalid_json``   200, ``application/json``, a body cut off in the middle
``html``           200, ``text/html``, a gateway's error page
``empty_choices``  200, a completion with ``"choices": []``
``no_message``     200, a choice without ``message``
``trickle``        200, a valid answer sent one byte every ``trickle_interval_s`` (at most ``trickle_max_s`` in all)
``length``         200, the valid answer with its last character cut off and ``finish_reason="length"``
``server_error``   500, whose error text repeats the API key the client sent
``bad_key``        401 "Incorrect API key provided: <the key>", as some gateways write it
``forbidden``      403
``bad_request``    400 that is not about the prompt's length
``not_found``      404 for every route, ``GET /v1/models`` included (a wrong base URL)
=================  =================================================================================================

An unknown model name needs no fault: the plain server answers it with vLLM's 404 and lists its model on
``GET /v1/models``. ``attempts`` counts every chat-completion request received, faulted or not. The server stops by
itself after ``stop_after_s``.

Run it stand-alone with ``python -m trl_grrm.testing.fault_server --fault html --port 0``.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from .judge_server import JudgeServer, make_parser, scorer_from_args

FAULTS = (
    "invalid_json", "html", "empty_choices", "no_message", "trickle", "length",
    "server_error", "bad_key", "forbidden", "bad_request", "not_found",
)


class FaultyJudgeServer(JudgeServer):
    """A :class:`JudgeServer` whose first ``fault_times`` chat-completion requests (``None``: all) get ``fault``.

    Example:
        >>> with FaultyJudgeServer("server_error", fault_times=1) as server:  # doctest: +SKIP
        ...     OpenAIEngine("judge", server.base_url).generate(prompts, SamplingSettings())  # retried once, then OK
    """

    def __init__(
        self,
        fault: str | None,
        fault_times: int | None = None,
        trickle_interval_s: float = 0.4,
        trickle_max_s: float = 20.0,
        stop_after_s: float | None = 120.0,
        **kwargs: Any,
    ) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"Unknown fault {fault!r}; choose one of {FAULTS}")
        super().__init__(stop_after_s=stop_after_s, **kwargs)
        self.fault = fault
        self.fault_times = fault_times
        self.trickle_interval_s = trickle_interval_s
        self.trickle_max_s = trickle_max_s
        self.attempts = 0
        self.faults_sent = 0
        self._count_lock = threading.Lock()

    def intercept(self, handler: BaseHTTPRequestHandler, body: dict[str, Any] | None) -> bool:
        if body is None:  # GET: only a wrong base URL breaks the model listing
            if self.fault == "not_found":
                handler.send_bytes(404, json.dumps({"detail": "Not Found"}).encode())
                return True
            return False
        with self._count_lock:
            self.attempts += 1
            faulted = self.fault is not None and (self.fault_times is None or self.faults_sent < self.fault_times)
            self.faults_sent += faulted
        if not faulted:
            return False
        key = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        error = {
            "server_error": (500, f"Upstream failed for the request with key {key}; try again."),
            "bad_key": (401, f"Incorrect API key provided: {key}. You can find your API key in your account."),
            "forbidden": (403, "This key may not use this model."),
            "bad_request": (400, "temperature must be at most 2, got 7"),
            "not_found": (404, "Not Found"),
        }.get(self.fault)
        if error is not None:
            status, message = error
            handler.send_bytes(status, json.dumps({"error": {"message": message, "code": status}}).encode())
            return True
        if self.fault == "invalid_json":
            handler.send_bytes(200, b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"ind')
        elif self.fault == "html":
            page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
            handler.send_bytes(200, page, content_type="text/html")
        elif self.fault in ("empty_choices", "no_message"):
            choices = [] if self.fault == "empty_choices" else [{"index": 0, "finish_reason": "stop"}]
            reply = {"id": "chatcmpl-1", "object": "chat.completion", "choices": choices}
            handler.send_bytes(200, json.dumps(reply).encode())
        else:  # the two faults that carry the real answer
            prompt = body["messages"][-1]["content"]
            text = self.judge(prompt, float(body.get("temperature") or 0.0))
            if self.fault == "length":
                handler.send_bytes(200, json.dumps(self.completion_body(text.rstrip()[:-1], prompt, "length")).encode())
            else:
                self._trickle(handler, json.dumps(self.completion_body(text, prompt)).encode())
        return True

    def _trickle(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:
        """Send a valid reply one byte at a time, until it is sent, the client leaves or ``trickle_max_s`` is up."""
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        deadline = time.monotonic() + self.trickle_max_s
        try:
            for index in range(len(data)):
                if time.monotonic() > deadline:
                    break
                handler.wfile.write(data[index : index + 1])
                time.sleep(self.trickle_interval_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: that is what the fault is for


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=FAULTS, required=True)
    parser.add_argument("--fault-times", type=int, help="Fault only the first N requests (default: all).")
    parser.add_argument("--stop-after-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    server = FaultyJudgeServer(
        args.fault, args.fault_times, stop_after_s=args.stop_after_s, host=args.host, port=args.port,
        model_name=args.model_name, scorer=scorer_from_args(args), request_log=args.request_log,
    )
    print(f"faulty judge server ({args.fault}) on {server.base_url}", flush=True)
    server.start()._thread.join()


if __name__ == "__main__":
    main()

"""A local OpenAI-compatible server that answers GQM judge prompts in GRRM's format, for machines without a GPU.

It also answers pointwise SQM prompts (:mod:`trl_grrm.formats.sqm`) with the same scoring rule, the score alone on
the last line.

It speaks the same HTTP interface as ``vllm serve`` (``GET /v1/models``, ``POST /v1/chat/completions``, ``usage``
counts, 400 for an over-long prompt), reads the source and candidates back out of the judge prompt and writes an
analysis, a ranking and 0-10 scores computed by a deterministic rule:

* with references (source text -> reference translation), the chrF of each candidate against the reference / 10;
* otherwise a rule anyone can recompute: ``len(candidate) % 11``.

A request with ``logprobs`` (GRAM-style verdicts) gets one token and its ``top_logprobs`` in OpenAI's format; for
a GRAM prompt (:mod:`trl_grrm.formats.gram`) the log-probabilities of ``"A"`` and ``"B"`` are
``log sigmoid(±(score_a - score_b))`` with the same scoring rule, so P("A") over the two is
``sigmoid(score_a - score_b)`` exactly.

Every request is appended to ``request_log`` (JSONL) so tests can count judge calls.

Run it stand-alone with ``python -m trl_grrm.testing.judge_server --port 8011 [--references data.jsonl]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..formats.gqm import CANDIDATE_IDS, format_gqm_answer, parse_gqm_prompt
from ..formats.gram import parse_gram_prompt
from ..formats.sqm import format_sqm_answer, parse_sqm_prompt


def length_score(source: str, candidate: str) -> int:
    """The default rule: ``len(candidate) % 11``."""
    return len(candidate) % 11


def chrf_scorer(references: Mapping[str, str], fallback: Callable[[str, str], int] = length_score):
    """A rule scoring candidates by chrF against known references (0-100 mapped to 0-10)."""
    from sacrebleu.metrics import CHRF

    chrf = CHRF()

    def score(source: str, candidate: str) -> int:
        if source not in references:
            return fallback(source, candidate)
        return round(chrf.sentence_score(candidate, [references[source]]).score / 10)

    return score


class _HTTPServer(ThreadingHTTPServer):
    # The default listen backlog (5) refuses connections when a client sends many requests at once.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up (its deadline, a cancelled batch) closes the socket mid-reply; no traceback for that.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class JudgeServer:
    """Serve GRRM-format judgements on ``http://host:port/v1`` from a background thread.

    ``garbage_below_temperature``: answers requests whose temperature is below it with unparsable text, to exercise
    the reward function's retries. ``max_prompt_chars``: longer prompts get vLLM's 400 context-length error.
    ``delay_s`` sleeps before every answer. ``stop_after_s``: the server stops by itself after that long.
    ``token_logprobs(prompt)``: the first-token log-probabilities a ``logprobs`` request is answered from (default:
    :meth:`gram_verdict_logprobs`).
    Subclasses answer some requests themselves through :meth:`intercept` (see :mod:`trl_grrm.testing.fault_server`).

    Example:
        >>> with JudgeServer(port=0) as server:  # doctest: +SKIP
        ...     reward = GroupRelativeRewardFunction(judge_model="judge", backend="openai", base_url=server.base_url)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        model_name: str = "judge",
        scorer: Callable[[str, str], int] = length_score,
        request_log: str | Path | None = None,
        garbage_below_temperature: float | None = None,
        max_prompt_chars: int | None = None,
        delay_s: float = 0.0,
        stop_after_s: float | None = None,
        token_logprobs: Callable[[str], Mapping[str, float]] | None = None,
    ) -> None:
        self.model_name = model_name
        self.scorer = scorer
        self.request_log = Path(request_log) if request_log else None
        self.garbage_below_temperature = garbage_below_temperature
        self.max_prompt_chars = max_prompt_chars
        self.delay_s = delay_s
        self.stop_after_s = stop_after_s
        self.token_logprobs = token_logprobs or self.gram_verdict_logprobs
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = _HTTPServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None
        self._stop_timer: threading.Timer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def judge(self, prompt: str, temperature: float) -> str:
        """The answer this server gives to one judge prompt (GQM group prompt or SQM pointwise prompt)."""
        try:
            parsed = parse_gqm_prompt(prompt)
        except ValueError:
            return self._judge_pointwise(prompt, temperature)
        if self.garbage_below_temperature is not None and temperature < self.garbage_below_temperature:
            return "I cannot decide which translation is better."
        ids = CANDIDATE_IDS[: len(parsed.candidates)]
        scores = {cid: int(self.scorer(parsed.source_text, text)) for cid, text in zip(ids, parsed.candidates)}
        analysis = "\n".join(f"**Translation {cid}:** {len(text)} characters." for cid, text in zip(ids, parsed.candidates))
        return format_gqm_answer(analysis, scores)

    def _judge_pointwise(self, prompt: str, temperature: float) -> str:
        """An SQM answer (analysis, then the score alone on the last line) with the same scoring rule."""
        parsed = parse_sqm_prompt(prompt)  # ValueError for anything else: the handler answers 400
        if self.garbage_below_temperature is not None and temperature < self.garbage_below_temperature:
            return "I cannot decide how good this translation is."
        score = int(self.scorer(parsed.source_text, parsed.translation))
        return format_sqm_answer(f"**Translation:** {len(parsed.translation)} characters.", score)

    def gram_verdict_logprobs(self, prompt: str) -> dict[str, float]:
        """First-token log-probabilities for a GRAM prompt: ``log sigmoid(±(score_a - score_b))``."""
        parsed = parse_gram_prompt(prompt)  # ValueError for anything else: the handler answers 400
        margin = self.scorer(parsed.question, parsed.response_a) - self.scorer(parsed.question, parsed.response_b)
        return {"A": -math.log1p(math.exp(-margin)), "B": -math.log1p(math.exp(margin))}

    def logprobs_body(self, prompt: str, top_logprobs: int) -> dict[str, Any]:
        """A one-token chat completion with OpenAI-style ``logprobs``: the likeliest token and the ``top_logprobs``
        likeliest, from :attr:`token_logprobs`."""
        ranked = sorted(self.token_logprobs(prompt).items(), key=lambda item: -item[1])

        def entry(token: str, logprob: float) -> dict[str, Any]:
            return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

        body = self.completion_body(ranked[0][0], prompt, finish_reason="length")
        body["choices"][0]["logprobs"] = {"content": [
            {**entry(*ranked[0]), "top_logprobs": [entry(*item) for item in ranked[:top_logprobs]]}
        ]}
        return body

    def completion_body(self, text: str, prompt: str, finish_reason: str = "stop") -> dict[str, Any]:
        """The JSON body of a chat completion that answers ``prompt`` with ``text``, as ``vllm serve`` writes it."""
        prompt_tokens, completion_tokens = len(prompt.split()), len(text.split())
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": text}}
            ],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def intercept(self, handler: BaseHTTPRequestHandler, body: dict[str, Any] | None) -> bool:
        """Answer a request before the normal route does; ``True`` if answered. ``body`` is ``None`` for a GET."""
        return False

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.request_log:
                with open(self.request_log, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                self.send_bytes(status, json.dumps(body).encode())

            def send_bytes(self, status: int, data: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if server.intercept(self, None):
                    return
                if self.path.rstrip("/").endswith("/v1/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
                elif self.path.rstrip("/").endswith("/health"):
                    self._send(200, {})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/v1/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if server.intercept(self, body):
                    return
                if body.get("model") != server.model_name:
                    self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                    return
                prompt = body["messages"][-1]["content"]
                temperature = float(body.get("temperature") or 0.0)
                server._record({"time": time.time(), "prompt": prompt, "temperature": temperature})
                if server.max_prompt_chars is not None and len(prompt) > server.max_prompt_chars:
                    self._send(400, {"error": {"message": (
                        f"This model's maximum context length is {server.max_prompt_chars} tokens. However, you "
                        f"requested {len(prompt)} tokens in the messages.")}})
                    return
                if server.delay_s:
                    time.sleep(server.delay_s)
                try:
                    if body.get("logprobs"):
                        self._send(200, server.logprobs_body(prompt, int(body.get("top_logprobs") or 0)))
                        return
                    text = server.judge(prompt, temperature)
                except ValueError as error:
                    self._send(400, {"error": {"message": f"not a judge prompt: {error}"}})
                    return
                self._send(200, server.completion_body(text, prompt))

        return Handler

    def start(self) -> JudgeServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        if self.stop_after_s is not None:
            self._stop_timer = threading.Timer(self.stop_after_s, self.stop)
            self._stop_timer.daemon = True
            self._stop_timer.start()
        return self

    def stop(self) -> None:
        if self._stop_timer is not None and self._stop_timer is not threading.current_thread():
            self._stop_timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
        # serve_forever has returned once shutdown() does; joining leaves no serving thread behind at interpreter exit
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def make_parser(description: str = __doc__.splitlines()[0]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--model-name", default="judge")
    parser.add_argument("--references", help="JSONL with src_text and trg_text: score by chrF against them")
    parser.add_argument("--request-log")
    return parser


def scorer_from_args(args: argparse.Namespace) -> Callable[[str, str], int]:
    """The scoring rule the command line asks for."""
    scorer = length_score
    if args.references:
        rows = [json.loads(line) for line in Path(args.references).read_text().splitlines() if line.strip()]
        scorer = chrf_scorer({row["src_text"]: row["trg_text"] for row in rows if row.get("trg_text")})
    return scorer


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    server = JudgeServer(args.host, args.port, args.model_name, scorer_from_args(args), args.request_log)
    print(f"judge server on {server.base_url}", flush=True)
    server._httpd.serve_forever()


if __name__ == "__main__":
    main()

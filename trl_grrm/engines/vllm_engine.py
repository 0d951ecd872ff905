"""In-process vLLM judge engine: one batched ``generate`` per call, prefix caching on."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from .base import (
    PROMPT_TOO_LONG,
    TRUNCATED,
    UNAVAILABLE,
    JudgeConfigurationError,
    JudgeEngine,
    JudgeOutput,
    Messages,
    SamplingSettings,
    verdict_token_ids,
)

logger = logging.getLogger(__name__)

# Answers shorter than this cannot hold an analysis, a ranking and scores, so such prompts count as too long.
MIN_ANSWER_TOKENS = 16
# How long an orphaned vLLM process gets to end after SIGTERM before it is killed.
ORPHAN_GRACE_S = 5.0
# Linux prctl options: the orphans of a "child subreaper"'s descendants are re-parented to it instead of to init.
_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37


def _prompt_key(messages: Messages) -> str:
    return json.dumps(messages, sort_keys=True, ensure_ascii=False, default=str)


def _fail_pending_outputs_when_engine_core_exits(llm: Any) -> None:
    """Make a ``generate`` call that waits on an engine core that exits without a word raise ``EngineDeadError``.

    vLLM's synchronous multiprocess client notices such an exit (SIGKILL, the OOM killer) in a monitor thread, marks
    the engine dead and shuts the client down, but nothing wakes a ``generate`` already waiting on the client's output
    queue: it would wait forever, and every other rank with it (measured with vLLM 0.31). So once that shutdown ran
    on a dead engine, the queue gets the error. Clients without those parts (in-process engine cores) are left alone.
    """
    from vllm.v1.engine.exceptions import EngineDeadError

    client = getattr(llm.llm_engine, "engine_core", None)
    outputs_queue, resources = getattr(client, "outputs_queue", None), getattr(client, "resources", None)
    if outputs_queue is None or not hasattr(resources, "engine_dead"):
        return
    shutdown = client.shutdown

    def shutdown_and_wake_the_waiting_call(*args: Any, **kwargs: Any) -> None:
        shutdown(*args, **kwargs)
        if resources.engine_dead:
            outputs_queue.put_nowait(EngineDeadError())

    client.shutdown = shutdown_and_wake_the_waiting_call


def _set_child_subreaper(on: bool) -> bool | None:
    """Set whether this process adopts the orphans below it; returns the previous setting, or ``None`` where the
    platform has no child subreaper (anything but Linux)."""
    prctl = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform.startswith("linux") else None
    if prctl is None:
        return None
    previous = ctypes.c_int(0)
    prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0)
    prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
    return bool(previous.value)


@contextlib.contextmanager
def _orphaned_vllm_processes_stopped(always: bool) -> Iterator[None]:
    """Stop the vLLM processes orphaned while the block runs: when it ends (``always``) or only when it raises.

    vLLM's shutdown SIGKILLs the engine core 5 s in. A worker process that the engine core was still starting (a
    SIGTERM or Ctrl-C while the engine starts) watches for its parent's exit only once started, so it ran on,
    orphaned, for up to 30 s after its engine's process had ended (vLLM 0.31, two loaded CPUs). Within the block this
    process adopts such orphans (Linux's child subreaper; elsewhere nothing is adopted); the adopted ones named
    ``VLLM::...``, with their own children, get SIGTERM and, :data:`ORPHAN_GRACE_S` later, SIGKILL. Processes that
    were this process's children before the block (other engines) are left alone.
    """
    import psutil

    this_process = psutil.Process()
    children_before = set(this_process.children())
    was_subreaper = _set_child_subreaper(True)
    raised = True
    try:
        yield
        raised = False
    finally:
        try:
            if raised or always:
                adopted = set(this_process.children()) - children_before
                _stop_processes([process for child in adopted for process in _vllm_process_tree(child)])
        finally:
            if was_subreaper is False:
                _set_child_subreaper(False)


def _vllm_process_tree(process: Any) -> list:
    """``process`` and its descendants if it is one of vLLM's processes (vLLM titles them ``VLLM::...``), else []."""
    import psutil

    try:
        return [process, *process.children(recursive=True)] if process.name().startswith("VLLM::") else []
    except psutil.Error:  # it ended meanwhile
        return []


def _stop_processes(processes: list) -> None:
    """SIGTERM ``processes``, SIGKILL those left after :data:`ORPHAN_GRACE_S`, and reap them."""
    import psutil

    if not processes:
        return
    logger.warning("Stopping %d vLLM process(es) left behind by their engine: %s", len(processes),
                   ", ".join(f"{process.pid}" for process in processes))  # fmt: skip
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=ORPHAN_GRACE_S)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=ORPHAN_GRACE_S)


class VLLMEngine(JudgeEngine):
    """Run the judge with ``vllm.LLM`` inside this process.

    The engine starts on first use. It renders chat prompts with the judge tokenizer's own chat template and sends
    token ids, so prompt lengths are known exactly and over-long prompts are rejected before generation. An answer
    cut by ``max_tokens`` (or by the context left after the prompt) comes back with ``error="truncated"``.

    An engine that dies during a call (vLLM's ``EngineDeadError``: its engine-core process was killed, or a step ran
    past vLLM's own deadline) is closed, started afresh and sent the call's prompts again, at most
    ``max_engine_restarts`` times per call; each answer counts the restarts in ``request_retries``. If it is still
    dead, or fails to start again, every prompt of the call comes back ``error="unavailable"``; the next call starts
    it afresh (and raises if it cannot). ``max_engine_restarts=0`` never restarts a dead engine.

    Example:
        >>> engine = VLLMEngine("double7/Qwen2.5-7B-GRRM", gpu_memory_utilization=0.3)  # doctest: +SKIP
        >>> engine.generate([[{"role": "user", "content": prompt}]], SamplingSettings())  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        dtype: str = "auto",
        enforce_eager: bool = False,
        seed: int = 0,
        llm_kwargs: dict[str, Any] | None = None,
        max_engine_restarts: int = 1,
    ) -> None:
        if max_engine_restarts < 0:
            raise ValueError(f"max_engine_restarts must be >= 0, got {max_engine_restarts}")
        self.model = model
        self.max_engine_restarts = max_engine_restarts
        self._llm_kwargs = dict(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            dtype=dtype,
            enforce_eager=enforce_eager,
            seed=seed,
            enable_prefix_caching=True,
            **(llm_kwargs or {}),
        )
        self._llm = None
        self._tokenizer = None
        # Token ids of the prompts last counted, by prompt: the reward function counts prompt tokens and then generates
        # for the same prompts, so `generate` reuses them instead of rendering and tokenizing every prompt twice.
        self._counted: dict[str, list[int]] = {}

    def _ensure_started(self) -> None:
        if self._llm is not None:
            return
        from vllm import LLM

        logger.info("Starting in-process vLLM judge engine for %s", self.model)
        with _orphaned_vllm_processes_stopped(always=False):
            self._llm = LLM(**self._llm_kwargs)
        _fail_pending_outputs_when_engine_core_exits(self._llm)
        self._tokenizer = self._llm.get_tokenizer()
        self._counted = {}
        self.max_prompt_tokens = self._llm.llm_engine.model_config.max_model_len - MIN_ANSWER_TOKENS

    def _render(
        self, prompts: list[Messages], known: dict[str, list[int]] | None = None
    ) -> tuple[list[str], dict[str, list[int]]]:
        """Each prompt's key, and token ids by key (after the chat template), reusing those in ``known``."""
        known = known or {}
        keys = [_prompt_key(messages) for messages in prompts]
        rendered: dict[str, list[int]] = {}
        missing: dict[str, Messages] = {}
        for key, messages in zip(keys, prompts):
            if key in known:
                rendered[key] = known[key]
            else:
                missing[key] = messages
        if missing:
            texts = [
                self._tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
                for m in missing.values()
            ]
            # The template already wrote every special token the model was trained with. One batched call.
            rendered.update(zip(missing, self._tokenizer(texts, add_special_tokens=False)["input_ids"]))
        return keys, rendered

    def count_prompt_tokens(self, prompts: list[Messages]) -> list[int]:
        self._ensure_started()
        keys, self._counted = self._render(prompts)  # kept for the `generate` call that usually follows
        return [len(self._counted[key]) for key in keys]

    def _fitting_prompts(self, prompts: list[Messages]) -> tuple[list[JudgeOutput | None], list[tuple[int, list[int]]]]:
        """Outputs with ``prompt_too_long`` filled in, and (index, token ids) of the prompts that fit."""
        max_model_len = self.max_prompt_tokens + MIN_ANSWER_TOKENS
        outputs: list[JudgeOutput | None] = [None] * len(prompts)
        fitting = []
        # Reuse what count_prompt_tokens just rendered for these prompts; the next call renders afresh.
        known, self._counted = self._counted, {}
        keys, rendered = self._render(prompts, known)
        for index, key in enumerate(keys):
            ids = list(rendered[key])
            if len(ids) > self.max_prompt_tokens:
                outputs[index] = JudgeOutput(
                    text=None, prompt_tokens=len(ids), error=PROMPT_TOO_LONG,
                    detail=f"{len(ids)} prompt tokens > {self.max_prompt_tokens} usable of max_model_len {max_model_len}",
                )
            else:
                fitting.append((index, ids))
        return outputs, fitting

    def generate(self, prompts: list[Messages], sampling: SamplingSettings) -> list[JudgeOutput]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._ensure_started()
        max_model_len = self.max_prompt_tokens + MIN_ANSWER_TOKENS
        outputs, fitting = self._fitting_prompts(prompts)
        batch, params, positions = [], [], []
        for index, ids in fitting:
            batch.append(TokensPrompt(prompt_token_ids=ids))
            params.append(
                SamplingParams(
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    max_tokens=min(sampling.max_tokens, max_model_len - len(ids)),
                    seed=None if sampling.seed is None else sampling.seed + index,
                )
            )
            positions.append(index)
        if batch:
            results, restarts = self._generate_with_restarts(batch, params, positions, outputs)
            for index, result in zip(positions, results):
                completion = result.outputs[0]
                output = JudgeOutput(
                    text=completion.text,
                    prompt_tokens=len(result.prompt_token_ids),
                    completion_tokens=len(completion.token_ids),
                    finish_reason=completion.finish_reason,
                    request_retries=restarts,
                )
                if completion.finish_reason == "length":
                    output.error = TRUNCATED
                    cut_at = len(completion.token_ids)
                    output.detail = f"answer cut at {cut_at} tokens (max_tokens={sampling.max_tokens})"
                outputs[index] = output
        return outputs  # type: ignore[return-value]

    def _generate_with_restarts(
        self, batch: list[Any], params: Any, positions: list[int], outputs: list[JudgeOutput | None]
    ) -> tuple[list[Any], int]:
        """``LLM.generate`` on ``batch``, restarting a dead engine (see the class docstring), and the restarts spent.

        When the engine stays dead the results are empty and ``outputs[i]`` is set to an ``unavailable`` answer for
        each of ``positions`` (the prompts of ``batch``)."""
        from vllm.v1.engine.exceptions import EngineDeadError

        restarts = 0
        while True:
            try:
                return self._llm.generate(batch, params, use_tqdm=False), restarts
            except Exception as error:
                # A call that meets vLLM's shutdown of a dead engine half-way fails on its closed sockets (ZMQError)
                # instead of with EngineDeadError; the client's own flag says which it was.
                resources = getattr(self._llm.llm_engine.engine_core, "resources", None)
                if not (isinstance(error, EngineDeadError) or getattr(resources, "engine_dead", False)):
                    raise
                met_as = "" if isinstance(error, EngineDeadError) else f", met as {type(error).__name__}"
                detail = f"the vLLM engine died (EngineDeadError{met_as}: {error})"
            if restarts == self.max_engine_restarts:
                break
            restarts += 1
            logger.warning(
                "The in-process vLLM judge engine for %s died; starting it again (restart %d of at most %d in this "
                "call) and resending %d prompts", self.model, restarts, self.max_engine_restarts, len(batch),
            )
            self.close()
            try:
                self._ensure_started()
            except Exception as start_error:  # the call falls back; the next call tries to start it again
                logger.exception("The vLLM judge engine for %s did not start again", self.model)
                self.close()
                detail += f"; starting it again failed ({type(start_error).__name__}: {start_error})"
                break
        logger.error("The vLLM judge engine for %s is down after %d restart(s): %d prompts unanswered",
                     self.model, restarts, len(batch))
        prompt_tokens = [len(prompt["prompt_token_ids"]) for prompt in batch]
        for index, length in zip(positions, prompt_tokens):
            outputs[index] = JudgeOutput(
                text=None, prompt_tokens=length, error=UNAVAILABLE, detail=detail, request_retries=restarts
            )
        return [], restarts

    def verdict_logprobs(
        self, prompts: list[Messages], verdict_tokens: Sequence[str], top_k: int = 20
    ) -> list[JudgeOutput]:
        """One greedy token per prompt with its ``top_k`` log-probabilities (vLLM's raw log-softmax over the
        vocabulary), read at the verdict tokens. A verdict token outside the top-k is absent from
        ``verdict_logprobs``; ``verdict_logprob_floor`` is then the smallest log-probability returned.

        ``top_k`` may not exceed vLLM's ``max_logprobs`` (20 by default; raise it through ``llm_kwargs``).

        Example:
            >>> engine.verdict_logprobs([[{"role": "user", "content": gram_prompt}]], ("A", "B"))  # doctest: +SKIP
            [JudgeOutput(text=None, ..., verdict_logprobs={'A': -0.05, 'B': -3.02}, verdict_logprob_floor=-9.8)]
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._ensure_started()
        token_ids = verdict_token_ids(self._tokenizer, verdict_tokens, self.model)
        max_logprobs = self._llm.llm_engine.model_config.max_logprobs
        if top_k < 1 or (max_logprobs != -1 and top_k > max_logprobs):
            raise JudgeConfigurationError(
                f"top_k={top_k} log-probabilities requested from the vLLM judge {self.model!r}, which returns 1 to "
                f"max_logprobs={max_logprobs}; lower top_k or pass llm_kwargs={{'max_logprobs': {top_k}}}"
            )
        outputs, fitting = self._fitting_prompts(prompts)
        if fitting:
            params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=top_k)
            batch = [TokensPrompt(prompt_token_ids=ids) for _, ids in fitting]
            results, restarts = self._generate_with_restarts(batch, params, [index for index, _ in fitting], outputs)
            for (index, ids), result in zip(fitting, results):
                returned = result.outputs[0].logprobs[0]  # {token id: Logprob} at the first answer position
                outputs[index] = JudgeOutput(
                    text=None,
                    prompt_tokens=len(ids),
                    request_retries=restarts,
                    verdict_logprobs={
                        token: returned[token_id].logprob
                        for token, token_id in zip(verdict_tokens, token_ids)
                        if token_id in returned
                    },
                    verdict_logprob_floor=min(entry.logprob for entry in returned.values()),
                )
        return outputs  # type: ignore[return-value]

    def close(self) -> None:
        llm, self._llm = self._llm, None
        # Shut the engine core down now instead of when the LLM is collected: a traceback from an interrupted
        # generate call (Ctrl-C, SIGTERM) keeps it alive, and its processes then outlive this one.
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if hasattr(engine_core, "shutdown"):
            with _orphaned_vllm_processes_stopped(always=True):
                engine_core.shutdown()

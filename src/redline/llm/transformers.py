"""`TransformersChat`: a Hugging Face causal language model run in this process.

torch and transformers are imported when the model loads (on its first call, or on
`TransformersChat.load`), never when this module is imported. Generation runs in a
worker thread, so the event loop keeps serving other runs meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from redline._aio import PerLoop
from redline._hf import DTYPES, HUB_ID, LOAD_ERRORS, dtype_keyword, hub_check, placement
from redline.errors import ConfigError, LLMError, MissingDependencyError
from redline.llm._base import ChatModel, Completion, Message
from redline.types import Usage

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TransformersChat"]

class TransformersChat(ChatModel):
    """A chat model run in process with Hugging Face transformers.

    The model loads on the first call (off the event loop) or on `load`. Prompts are
    built with the tokenizer's chat template when it has one, else as
    ``"role: content"`` lines ending with ``"assistant:"``. Token counts in
    `Completion.usage` are exact: the prompt's tokens and the tokens generated.

    Example:
        >>> chat = TransformersChat("HuggingFaceTB/SmolLM2-360M-Instruct")  # doctest: +SKIP
        >>> await chat.complete([{"role": "user", "content": "Hi"}])  # doctest: +SKIP

    Args:
        model_or_path: a local model folder, a Hub id, or a loaded ``PreTrainedModel``.
        tokenizer: the tokenizer to use; by default loaded from the same place as the
            model.
        device: ``"auto"`` (CUDA when available, else the CPU), or a torch device such
            as ``"cpu"`` or ``"cuda:1"``. A loaded model passed in stays where it is
            under ``"auto"``.
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on the CPU), ``"float32"``,
            ``"float16"`` or ``"bfloat16"``. Ignored for a loaded model.
        max_concurrency: generations allowed at once; further calls wait their turn.

    Attributes:
        model: the model's name (its path or Hub id).

    Raises:
        ConfigError: a path that does not exist (and does not look like a Hub id), an
            unknown dtype or a ``max_concurrency`` below 1.
    """

    def __init__(
        self,
        model_or_path: str | os.PathLike[str] | PreTrainedModel,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_concurrency: int = 1,
    ) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._source: str | None = None
        self._hf_model: Any = None
        if isinstance(model_or_path, (str, os.PathLike)):
            self._source = _check_source(model_or_path)
            self.model = self._source
        else:
            self._hf_model = model_or_path
            config = getattr(model_or_path, "config", None)
            self.model = (getattr(config, "name_or_path", "") or
                          type(model_or_path).__name__)
        self.price = None
        self.device = device
        self.dtype = dtype
        self.max_concurrency = max_concurrency
        self._tokenizer: Any = tokenizer
        self._torch: Any = None  # the modules, once loaded
        self._transformers: Any = None
        self._loaded = False
        self._load_lock = threading.Lock()
        # Tokenizers from the `tokenizers` library are not safe to use from two threads
        # at once ("Already borrowed"); every use goes through this lock.
        self._tokenizer_lock = threading.RLock()
        # The hard limit across threads and event loops; the per-loop semaphores below
        # make waiting callers queue on their loop instead of holding a worker thread.
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._waiting: PerLoop[asyncio.Semaphore] = PerLoop(
            lambda: asyncio.Semaphore(max_concurrency))

    def __repr__(self) -> str:
        return f"TransformersChat({self.model!r}, device={self.device!r})"

    @property
    def loaded(self) -> bool:
        """Whether the model and tokenizer are in memory."""
        return self._loaded

    def load(self) -> Self:
        """Load the model and tokenizer now rather than on the first call (blocking).

        Returns:
            The chat model itself.

        Raises:
            MissingDependencyError: torch or transformers is not installed.
            LLMError: the model or its tokenizer could not be loaded.
        """
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._loaded = True
        return self

    def estimate_input_tokens(self, messages: Sequence[Message]) -> int:
        """The prompt's exact token count once the model is loaded (an upper bound before)."""
        if not self._loaded:
            return super().estimate_input_tokens(messages)
        return len(self._encode(messages))

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
        # response_format (JSON mode) has no in-process equivalent here; callers that
        # ask for it parse and re-ask anyway (the LLM judge does).
        if not self._loaded:
            await asyncio.to_thread(self.load)
        cancelled = threading.Event()
        async with self._waiting.get():
            try:
                return await asyncio.to_thread(
                    self._generate, list(messages), max_tokens, temperature,
                    list(stop or ()), seed, cancelled)
            except asyncio.CancelledError:
                # The thread cannot be interrupted, but generation checks this flag
                # after every token, so a timed-out call frees the model at once.
                cancelled.set()
                raise

    # -- in the worker thread ------------------------------------------------------

    def _load(self) -> None:
        torch, transformers = _import_backend()
        if self._hf_model is not None:
            model = self._hf_model
            if self.device != "auto":
                model = model.to(self.device)
            if self._tokenizer is None:
                self._tokenizer = self._load_tokenizer(transformers, model.name_or_path)
        else:
            assert self._source is not None  # set whenever no model object was given
            device, dtype = placement(torch, self.device, self.dtype)
            if not Path(self._source).exists():
                hub_check(self._source, what="model")
            try:
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    self._source, **{dtype_keyword(transformers): dtype})
                model = model.to(device)
            except LOAD_ERRORS as exc:
                raise LLMError(f"could not load the model {self.model!r}: {exc}") from exc
            if self._tokenizer is None:
                self._tokenizer = self._load_tokenizer(transformers, self._source)
        model.eval()
        self._hf_model = model
        self._torch = torch
        self._transformers = transformers

    def _load_tokenizer(self, transformers: Any, source: str | None) -> Any:
        if not source:
            raise ConfigError(f"the model {self.model!r} has no name_or_path to load a "
                              "tokenizer from: pass tokenizer=")
        try:
            return transformers.AutoTokenizer.from_pretrained(source)
        except LOAD_ERRORS as exc:
            raise LLMError(f"could not load the tokenizer of {self.model!r}: {exc}") from exc

    def _prompt(self, messages: Sequence[Message]) -> tuple[str, bool]:
        """The prompt text, and whether the tokenizer should add its special tokens."""
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            import jinja2

            try:
                text = tokenizer.apply_chat_template(
                    [dict(m) for m in messages], add_generation_prompt=True, tokenize=False)
            except jinja2.TemplateError as exc:
                raise LLMError(f"the chat template of {self.model!r} rejected the "
                               f"messages: {exc}") from exc
            # The template writes the special tokens (BOS, role markers) itself.
            return str(text), False
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"]), True

    def _encode(self, messages: Sequence[Message]) -> list[int]:
        with self._tokenizer_lock:
            text, special = self._prompt(messages)
            return list(self._tokenizer(text, add_special_tokens=special)["input_ids"])

    def _decode(self, ids: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))

    def _generate(self, messages: list[Message], max_tokens: int, temperature: float,
                  stop: list[str], seed: int | None, cancelled: threading.Event
                  ) -> Completion:
        torch = self._torch
        model = self._hf_model
        prompt = self._encode(messages)
        device = next(model.parameters()).device
        input_ids = torch.tensor([prompt], dtype=torch.long, device=device)
        config = self._generation_config(max_tokens, temperature)
        criteria = self._transformers.StoppingCriteriaList(
            [_StopWhen(self, len(prompt), stop, cancelled)])
        started = time.monotonic()
        with self._slots, torch.inference_mode(), self._seeded(seed, device):
            try:
                output = model.generate(
                    input_ids, attention_mask=torch.ones_like(input_ids),
                    generation_config=config, stopping_criteria=criteria)
            # Out of memory (a RuntimeError), a prompt longer than the model's positions
            # (IndexError), a generation setting the model rejects (ValueError).
            except (RuntimeError, IndexError, ValueError) as exc:
                raise LLMError(f"model {self.model!r} failed to generate: {exc}") from exc
        generated = output[0, len(prompt):].tolist()
        text = self._decode(generated)
        eos = config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        finish = "stop" if generated and generated[-1] in eos_ids else "length"
        for s in stop:
            at = text.find(s)
            if at != -1:
                text, finish = text[:at], "stop"
        if cancelled.is_set():
            finish = "cancelled"
        return Completion(
            text=text, finish_reason=finish, model=self.model,
            usage=Usage(input_tokens=len(prompt), output_tokens=len(generated),
                        seconds=time.monotonic() - started))

    def _seeded(self, seed: int | None, device: Any) -> contextlib.AbstractContextManager[Any]:
        """Seed the random generators inside the block, restoring them afterwards."""
        if seed is None:
            return contextlib.nullcontext()
        torch = self._torch
        devices = []
        if device.type == "cuda":
            devices = [device.index if device.index is not None else
                       torch.cuda.current_device()]

        @contextlib.contextmanager
        def seeded() -> Iterator[None]:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                yield

        return seeded()

    def _generation_config(self, max_tokens: int, temperature: float) -> Any:
        # A fresh config rather than the model's own: a run must mean the same on every
        # backend, so no repetition penalty, top-k or top-p the model card chose. Only
        # the special tokens are kept.
        own = self._hf_model.generation_config
        eos = own.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or ())
        if self._tokenizer.eos_token_id is not None and \
                self._tokenizer.eos_token_id not in eos_ids:
            eos_ids.append(self._tokenizer.eos_token_id)
        pad = own.pad_token_id
        if pad is None:
            pad = self._tokenizer.pad_token_id
        if pad is None and eos_ids:
            pad = eos_ids[0]
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            if temperature > 0 else {"do_sample": False})
        return self._transformers.GenerationConfig(
            max_new_tokens=max_tokens, eos_token_id=eos_ids, pad_token_id=pad,
            bos_token_id=own.bos_token_id, **sampling)


class _StopWhen:
    """Ends generation on a stop string or when the caller gave up.

    A `transformers.StoppingCriteria` by duck typing (so this module imports no torch).
    """

    def __init__(self, chat: TransformersChat, prompt_len: int, stop: list[str],
                 cancelled: threading.Event) -> None:
        self.chat = chat
        self.prompt_len = prompt_len
        self.stop = stop
        self.cancelled = cancelled
        # Each token decodes to at least one character, except special tokens: a stop
        # string can only end in the last len(s) + a few tokens.
        self.window = max((len(s) for s in stop), default=0) + 4

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        done = self.cancelled.is_set()
        if not done and self.stop:
            new = input_ids[0, self.prompt_len:]
            tail = self.chat._decode(new[-self.window:].tolist())
            done = any(s in tail for s in self.stop)
        return self.chat._torch.full((input_ids.shape[0],), done, dtype=self.chat._torch.bool,
                                     device=input_ids.device)


def _check_source(model_or_path: str | os.PathLike[str]) -> str:
    path = Path(model_or_path).expanduser()
    if path.exists():
        return str(path)
    text = os.fspath(model_or_path)
    if isinstance(model_or_path, str) and HUB_ID.fullmatch(text) and ".." not in text:
        return text  # a Hub id: from_pretrained will fetch it (or find it in the cache)
    raise ConfigError(f"the model path {text!r} does not exist (and is not a Hugging Face "
                      "Hub id such as 'owner/name')")


def _import_backend() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("TransformersChat", "rm") from exc
    return torch, transformers

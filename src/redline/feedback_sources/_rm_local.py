"""`TransformersRewardModel`: a learned reward model run in this process (GPU when present)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from redline._hf import DTYPES, HUB_ID, LOAD_ERRORS, dtype_keyword, hub_check, placement
from redline.errors import ConfigError, CriticError, MissingDependencyError
from redline.feedback_sources._batcher import MicroBatcher
from redline.feedback_sources._rewards import Reward

__all__ = ["DEFAULT_MAX_LENGTH", "TransformersRewardModel"]

log = logging.getLogger("redline.feedback_sources")

DEFAULT_MAX_LENGTH = 4096
"""The longest input fed to the model when neither it nor its tokenizer says less."""


@dataclass
class _Encoded:
    features: dict[str, list[int]]
    truncated: bool
    dropped: dict[str, int]

    @property
    def length(self) -> int:
        return len(self.features["input_ids"])


class TransformersRewardModel:
    """A learned reward model run in this process (GPU when present): a `RewardSource`.

    Any Hugging Face ``AutoModelForSequenceClassification`` checkpoint with one output is
    a reward model here (Skywork-Reward, OpenAssistant's DeBERTa reward models, ...).
    The prompt is the user turn and the answer the assistant turn, rendered with the
    tokenizer's chat template when it has one, else fed as a text pair (``prompt``,
    ``answer``). An input longer than ``max_length`` tokens keeps the end of the answer
    (where a reward model reads its verdict) and the start of the prompt; each `Reward`
    says so (``truncated``, ``dropped``).

    torch and transformers are imported when the model loads (on the first call, or
    `load` / `preflight`), never when it is built. Concurrent calls, from one event loop
    or many, are coalesced into batched forward passes that run in a worker thread, so
    the event loop keeps serving the other runs meanwhile. Instances of one model on one
    device and dtype share one loaded copy while any of them holds it (each critic a
    `redline compare` method builds is such an instance).

    Example:
        >>> rm = TransformersRewardModel("Skywork/Skywork-Reward-V2-Qwen3-0.6B")  # doctest: +SKIP
        >>> await rm.rewards([("2 + 2?", "4"), ("2 + 2?", "5")])  # doctest: +SKIP
        [3.1, -2.4]

    Args:
        model: a local model folder (with ``config.json``) or a Hugging Face Hub id.
        device: ``"auto"`` (CUDA when available, else the CPU) or a torch device.
        dtype: ``"auto"`` (bfloat16 on CUDA, float32 on the CPU), ``"float32"``,
            ``"float16"`` or ``"bfloat16"``.
        max_length: the longest input in tokens; by default the model's limit, at most
            4096.
        batch_size: the largest forward pass; concurrent calls are coalesced up to it.
        max_wait_ms: how long the first call to an idle model waits for others to
            batch with.

    Attributes:
        forward_passes: forward passes run so far (for tests and benchmarks).

    Raises:
        ConfigError: a path that is not a model folder (or a Hub id), a bad setting.
        MissingDependencyError: torch or transformers is not installed.
    """

    deterministic = True
    """The same pair always gets the same reward (in float32, to ~1e-7 across batch
    shapes; in bfloat16 on a GPU, to ~1e-2)."""

    def __init__(self, model: str | os.PathLike[str], *, device: str = "auto",
                 dtype: str = "auto", max_length: int | None = None, batch_size: int = 16,
                 max_wait_ms: float = 2.0) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        if batch_size < 1 or (max_length is not None and max_length < 8) or max_wait_ms < 0:
            raise ConfigError(f"reward model {os.fspath(model)!r}: batch_size must be >= 1, "
                              f"max_length >= 8 and max_wait_ms >= 0 (got {batch_size}, "
                              f"{max_length}, {max_wait_ms})")
        for module in ("torch", "transformers"):
            if importlib.util.find_spec(module) is None:
                raise MissingDependencyError("a transformers reward model", "rm")
        self.model, self.is_local = _check_source(model)
        self.device = device
        self.dtype = dtype
        self.max_length = max_length
        self.batch_size = batch_size
        self.forward_passes = 0
        self._lock = threading.Lock()  # guards this instance's load
        self._loaded = False
        self._weights: _Weights | None = None
        self._hf_model: Any = None
        self._tokenizer: Any = None
        self._torch: Any = None
        self._chat = False
        self._pad_id = 0
        self._where: Any = None
        self._origin = {"model": self.model}
        self._batcher: MicroBatcher[tuple[str, str], Reward] = MicroBatcher(
            self._score_in_thread, max_batch=batch_size, max_wait=max_wait_ms / 1000)

    def __repr__(self) -> str:
        return f"TransformersRewardModel({self.model!r}, device={self.device!r})"

    @property
    def loaded(self) -> bool:
        """Whether the model and tokenizer are in memory."""
        return self._loaded

    def load(self) -> Self:
        """Load the model and tokenizer now rather than on the first call (blocking).

        Raises:
            MissingDependencyError: torch or transformers is not installed.
            ConfigError: ``device`` is not a torch device.
            CriticError: the model cannot be loaded, or is not a one-output classifier.
        """
        with self._lock:
            self._load_locked()
        return self

    async def preflight(self) -> None:
        """Load the model now (in a worker thread), so a model that cannot be found or
        loaded stops the run before any token is spent.

        A Hub id that is not in the local cache is looked up once, without retries.

        Raises:
            ConfigError: the model cannot be loaded (the loading error's message).
        """
        try:
            await asyncio.to_thread(self.load)
        except CriticError as exc:
            raise ConfigError(str(exc)) from exc

    async def rewards(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The raw rewards of ``(prompt, answer)`` pairs (what `calibrate` fits on).

        Raises:
            CriticError: the model cannot be loaded, or a forward pass failed.
        """
        return [r.raw for r in await self.detailed_rewards(pairs)]

    async def detailed_rewards(self, pairs: Sequence[tuple[str, str]]) -> list[Reward]:
        """The rewards with the tokens read and what truncation dropped, in batches shared
        with concurrent callers.

        Raises:
            CriticError: the model cannot be loaded, or a forward pass failed.
        """
        return await self._batcher.submit_many(list(pairs))

    # -- in the worker thread ------------------------------------------------------

    async def _score_in_thread(self, items: list[tuple[str, str]]) -> list[Reward]:
        return await asyncio.to_thread(self._score, items)

    def _score(self, items: list[tuple[str, str]]) -> list[Reward]:
        self.load()
        # One forward at a time per loaded copy, whichever instance asks: tokenizers are
        # not thread-safe, and instances of one model share its tokenizer.
        weights = self._weights
        assert weights is not None
        with weights.lock:
            encoded = [self._encode(prompt, answer) for prompt, answer in items]
            # Similar lengths share a forward pass, so little of it is padding.
            order = sorted(range(len(items)), key=lambda i: encoded[i].length)
            out: list[Reward | None] = [None] * len(items)
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                raws = self._forward([encoded[i].features for i in chunk])
                for i, raw in zip(chunk, raws, strict=True):
                    e = encoded[i]
                    out[i] = Reward(raw=raw, tokens=e.length, truncated=e.truncated,
                                    dropped=e.dropped, origin=self._origin)
        return [r for r in out if r is not None]

    def _load_locked(self) -> None:
        if self._loaded:
            return
        weights = _weights(self.model, self.is_local, self.device, self.dtype)
        if weights.no_pad:
            self.batch_size = 1
        self._pad_id, self._chat = weights.pad_id, weights.chat
        self.max_length = self.max_length or weights.max_length
        self._hf_model, self._tokenizer = weights.model, weights.tokenizer
        self._torch, self._where = weights.torch, weights.where
        self._weights = weights  # the shared copy lives while an instance holds it
        self._loaded = True

    def _tokenize(self, prompt: str, answer: str) -> dict[str, list[int]]:
        tokenizer = self._tokenizer
        if self._chat:
            import jinja2

            try:
                text = tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": answer}], tokenize=False)
            except jinja2.TemplateError as exc:
                raise CriticError(f"the chat template of {self.model!r} rejected a "
                                  f"user/assistant conversation: {exc}") from exc
            enc = tokenizer(str(text), add_special_tokens=False)
        else:
            enc = tokenizer(prompt, answer)
        return {k: list(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids")
                if k in enc}

    def _encode(self, prompt: str, answer: str) -> _Encoded:
        features = self._tokenize(prompt, answer)
        limit = self.max_length
        assert limit is not None
        if len(features["input_ids"]) <= limit:
            return _Encoded(features, truncated=False, dropped={})
        p_tokens, a_tokens = self._offsets(prompt), self._offsets(answer)
        overhead = len(features["input_ids"]) - len(p_tokens) - len(a_tokens)
        room = limit - overhead
        if room < 2:
            raise CriticError(f"reward model {self.model!r}: max_length {limit} leaves no "
                              f"room for the answer ({overhead} tokens of template)",
                              )
        # The answer keeps its end (at least half the room); the prompt keeps its start.
        keep_a = min(len(a_tokens), max(room - len(p_tokens), room // 2))
        keep_p = min(len(p_tokens), room - keep_a)
        for _ in range(8):  # re-tokenising the cut texts can shift a token or two
            head = prompt[:p_tokens[keep_p - 1][1]] if keep_p else ""
            tail = answer[a_tokens[len(a_tokens) - keep_a][0]:] if keep_a else ""
            features = self._tokenize(head, tail)
            excess = len(features["input_ids"]) - limit
            if excess <= 0:
                return _Encoded(features, truncated=True, dropped={
                    "answer": len(a_tokens) - keep_a, "prompt": len(p_tokens) - keep_p})
            if keep_p > excess and keep_a <= room // 2:
                keep_p -= excess
            else:
                keep_a = max(0, keep_a - excess)
        raise CriticError(f"reward model {self.model!r}: could not fit the input into "
                          f"{limit} tokens")

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the text's tokens (standalone, no special tokens)."""
        if not text:
            return []
        try:
            enc = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
        except NotImplementedError:  # a slow tokenizer: spans from decoding token by token
            ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
            spans, at = [], 0
            for i in range(len(ids)):
                end = len(self._tokenizer.decode(ids[:i + 1]))
                spans.append((at, min(end, len(text))))
                at = spans[-1][1]
            return spans

    def _forward(self, batch: list[dict[str, list[int]]]) -> list[float]:
        torch = self._torch
        width = max(len(f["input_ids"]) for f in batch)
        pads = {"input_ids": self._pad_id, "attention_mask": 0,
                "token_type_ids": getattr(self._tokenizer, "pad_token_type_id", 0)}
        tensors = {key: torch.tensor([f[key] + [pads[key]] * (width - len(f[key]))
                                      for f in batch], dtype=torch.long).to(self._where)
                   for key in batch[0]}
        try:
            with torch.inference_mode():
                logits = self._hf_model(**tensors).logits
        except (RuntimeError, IndexError, ValueError) as exc:  # out of memory, too long, ...
            raise CriticError(f"reward model {self.model!r} failed on a batch of "
                              f"{len(batch)}: {exc}") from exc
        self.forward_passes += 1
        return [float(v) for v in logits[:, 0].float().cpu().tolist()]


@dataclass(eq=False)
class _Weights:
    """A reward model loaded in this process: the model, its tokenizer and what scoring
    reads from them, shared by every `TransformersRewardModel` of the same source, device
    and dtype (inference never changes them)."""

    model: Any
    tokenizer: Any
    torch: Any
    where: Any
    pad_id: int
    no_pad: bool
    chat: bool
    max_length: int
    lock: threading.Lock = field(default_factory=threading.Lock)


_LOADED: weakref.WeakValueDictionary[tuple[str, str, str], _Weights] = \
    weakref.WeakValueDictionary()
"""Each loaded reward model by (source, device, dtype), while an instance holds it: a
`redline compare` whose methods all score with ``-c rm:...`` (each method builds its own
critic) loads the model once, not once per method with two copies in memory at a time."""
_LOADING = threading.Lock()


def _weights(source: str, is_local: bool, device: str, dtype_name: str) -> _Weights:
    """The loaded model of `source` on `device` in `dtype_name`: the copy already in
    memory, else a new one (blocking).

    Raises:
        MissingDependencyError: torch or transformers is not installed.
        ConfigError: ``device`` is not a torch device.
        CriticError: the model cannot be loaded, or is not a one-output classifier.
    """
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("RewardModelCritic", "rm") from exc
    where, dtype = placement(torch, device, dtype_name)
    key = (source, str(where), str(dtype))
    with _LOADING:  # two instances loading at once load one copy
        found = _LOADED.get(key)
        if found is not None:
            return found
        loaded = _load(source, is_local, torch, transformers, where, dtype)
        _LOADED[key] = loaded
        return loaded


def _load(source: str, is_local: bool, torch: Any, transformers: Any, where: Any,
          dtype: Any) -> _Weights:
    if not is_local:
        try:
            hub_check(source, what="reward model")
        except ConfigError as exc:
            raise CriticError(str(exc)) from None
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        _check_config(source, config)
        model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
            source, output_loading_info=True, **{dtype_keyword(transformers): dtype})
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except _load_errors() as exc:
        hint = "" if is_local else (" (a Hub id is downloaded on first use, which needs "
                                    "network access; or give a local folder)")
        raise CriticError(f"could not load the reward model {source!r}: "
                          f"{type(exc).__name__}: {exc}{hint}") from exc
    if info.get("missing_keys"):
        raise CriticError(
            f"the reward model {source!r} lacks weights for "
            f"{', '.join(sorted(info['missing_keys']))}: its reward head would be random; "
            "expected a checkpoint saved from a sequence-classification model")
    try:
        model = model.to(where)
    except (RuntimeError, AssertionError) as exc:  # e.g. "Torch not compiled with CUDA"
        raise CriticError(f"cannot put the reward model {source!r} on device "
                          f"{str(where)!r}: {exc}") from exc
    model.eval()
    pad = model.config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
    no_pad = pad is None
    if no_pad:
        log.warning("reward model %r has no padding token: scoring one answer per "
                    "forward pass", source)
        pad = 0
    model.config.pad_token_id = pad  # decoder reward heads read the last non-pad token
    if getattr(model.config, "use_cache", False):
        model.config.use_cache = False  # one forward pass: a KV cache is wasted work
    chat = bool(getattr(tokenizer, "chat_template", None))
    log.info("reward model %r loaded on %s (%s, %s input)", source, where, dtype,
             "chat template" if chat else "text pair")
    return _Weights(model=model, tokenizer=tokenizer, torch=torch, where=where, pad_id=pad,
                    no_pad=no_pad, chat=chat,
                    max_length=_default_max_length(config, tokenizer))


def _check_source(model: str | os.PathLike[str]) -> tuple[str, bool]:
    """The model's folder or Hub id, and whether it is a local folder."""
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{text!r} is not a reward model folder: expected a directory "
                              "with config.json (what save_pretrained writes)")
        return str(path), True
    looks_local = text.startswith((".", "/", "~")) or "\\" in text
    if isinstance(model, str) and not looks_local and HUB_ID.fullmatch(text):
        return text, False
    raise ConfigError(f"reward model path {text!r} does not exist: give a directory with "
                      "config.json, or a Hugging Face Hub id such as 'owner/name' (Hub "
                      "downloads need network access)")


def _load_errors() -> tuple[type[BaseException], ...]:
    """What loading a checkpoint raises: the usual errors, and a corrupt safetensors file."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - transformers requires safetensors
        return LOAD_ERRORS
    return (*LOAD_ERRORS, SafetensorError)


def _check_config(source: str, config: Any) -> None:
    archs = list(getattr(config, "architectures", None) or [])
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise CriticError(f"{source!r} is a {archs[0]}, not a reward model: expected an "
                          "AutoModelForSequenceClassification checkpoint with one output")
    if getattr(config, "num_labels", 1) != 1:
        raise CriticError(f"{source!r} has {config.num_labels} outputs; a reward model has "
                          "one (num_labels=1)")


def _default_max_length(config: Any, tokenizer: Any) -> int:
    limits = [DEFAULT_MAX_LENGTH]
    for value in (getattr(tokenizer, "model_max_length", None),
                  getattr(config, "max_position_embeddings", None)):
        if isinstance(value, int) and 8 <= value < 10**7:
            limits.append(value)
    return min(limits)

"""What the Hugging Face backends share: device and dtype placement, load errors, hub ids.

Used by `redline.llm.transformers` and the local reward source
(`redline.feedback_sources.rewards`); torch and transformers are passed in, never
imported here.
"""

from __future__ import annotations

import re
from typing import Any

from redline.errors import ConfigError

__all__ = ["DTYPES", "HUB_ID", "LOAD_ERRORS", "dtype_keyword", "hub_check", "placement"]

DTYPES = ("auto", "float32", "float16", "bfloat16")
"""The accepted ``dtype`` arguments."""

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
"""What a Hugging Face Hub id looks like: "name" or "owner/name"."""

LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, ImportError, TypeError)
"""Errors from_pretrained raises for a model it cannot load: files missing or unreachable
(OSError), an unknown architecture or bad config (ValueError, KeyError), weights that do
not fit (RuntimeError), a tokenizer needing a missing package (ImportError)."""


def placement(torch: Any, device: str, dtype: str) -> tuple[Any, Any]:
    """The torch device and dtype for ``device`` / ``dtype`` ("auto" resolved)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        where = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device {device!r} is not a torch device: {exc}") from exc
    if dtype == "auto":
        dtype = "bfloat16" if where.type == "cuda" else "float32"
    return where, getattr(torch, dtype)


def dtype_keyword(transformers: Any) -> str:
    """from_pretrained's dtype keyword: transformers 4.56 renamed ``torch_dtype`` to ``dtype``."""
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def hub_check(source: str, *, what: str) -> None:
    """Fail at once, without the Hub client's retries, when `source` is a Hub id that is
    neither in the local cache nor reachable.

    huggingface_hub retries an unreachable Hub for about 20 seconds before it gives up;
    a model that cannot be had should say so at once. A cached model, or a Hub that
    answers one quick request, passes (``from_pretrained`` then does its usual work).

    Raises:
        ConfigError: offline (``HF_HUB_OFFLINE``) and not cached, or the Hub cannot be
            reached and it is not cached.
    """
    import httpx
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(source, "config.json"), str):
        return
    hint = "give a local folder (save_pretrained), or download it first"
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(f"{what} {source!r} is not in the local Hugging Face cache and "
                          f"HF_HUB_OFFLINE is set: {hint}")
    url = f"{constants.ENDPOINT.rstrip('/')}/api/models/{source}"
    try:
        httpx.head(url, timeout=5.0, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ConfigError(f"{what} {source!r} is not in the local Hugging Face cache and "
                          f"the Hub at {constants.ENDPOINT} cannot be reached "
                          f"({type(exc).__name__}: {exc}): {hint}") from None

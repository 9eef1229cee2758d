"""What the Hugging Face backends share: device and dtype placement, load errors, hub ids.

Used by `redline.llm.transformers` and `redline.critics.reward_model`; torch and
transformers are passed in, never imported here.
"""

from __future__ import annotations

import re
from typing import Any

from redline.errors import ConfigError

__all__ = ["DTYPES", "HUB_ID", "LOAD_ERRORS", "dtype_keyword", "placement"]

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

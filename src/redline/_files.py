"""Reading the small text files that configure critics (rubrics, tests, schemas)."""

from __future__ import annotations

from pathlib import Path

from redline.errors import ConfigError

__all__ = ["read_config_text"]


def read_config_text(path: str | Path, what: str) -> str:
    """The text of `path`, or a `ConfigError` naming `what` when it is unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {what} {str(path)!r}: not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"{what} {str(path)!r} is empty")
    return text

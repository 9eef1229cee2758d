"""``redline serve``: an OpenAI-compatible refining proxy (ASGI: Starlette + uvicorn).

Any OpenAI client sends a chat request to ``model="redline/<run>"``; the server refines
the last user message with that run against the upstream model and answers a normal
``chat.completion`` whose ``usage`` sums every call of the loop, plus a ``redline`` field
(score, stop reason, rounds, critiques). See `redline.serve.protocol` for what a request
may ask, and README "Serve".

```python
from redline.serve import RunTable, ServeSettings, create_app

runs = RunTable.from_specs({"self-refine": RunSpec(preset="self-refine")})
await runs.preflight()
app = create_app(runs, ServeSettings(concurrency=32))   # any ASGI server runs it
```

`create_app`, `begin_shutdown` and `ServeSettings` need ``pip install "redline[serve]"``
(they import Starlette when first used); the protocol and the run table do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redline.serve.protocol import ApiError, ChatPlan, plan_request
from redline.serve.runs import RunTable, Upstream, default_run_name, load_specs

if TYPE_CHECKING:
    from redline.serve._app import ServeSettings, begin_shutdown, create_app

__all__ = ["ApiError", "ChatPlan", "RunTable", "ServeSettings", "Upstream", "begin_shutdown",
           "create_app", "default_run_name", "load_specs", "plan_request"]


def __getattr__(name: str) -> Any:
    if name in ("ServeSettings", "begin_shutdown", "create_app"):
        try:
            from redline.serve import _app
        except ImportError as exc:  # starlette or uvicorn missing
            from redline.errors import MissingDependencyError

            raise MissingDependencyError(f"redline serve ({exc.name} is missing)",
                                         "serve") from None
        return getattr(_app, name)
    raise AttributeError(f"module 'redline.serve' has no attribute {name!r}")

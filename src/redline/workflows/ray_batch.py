"""A batch sharded over a Ray cluster (``redline batch --ray ADDRESS``).

```
driver: checks, preflight ── shards of pending items ──▶ Ray tasks (one CPU each)
   ▲                                                     build the run from the RunSpec,
   └──── finished documents, appended + fsynced ◀────────  run `abatch` on the shard
```

Only the driver writes the output file, with the same `BatchOutput` as a local batch,
so the crash-safety rules are the same: a line per finished item, no duplicate id, a
torn last line dropped on resume; a shard in flight when the driver dies runs again on
resume. Workers build their run from the `RunSpec` (no live object crosses the wire)
and talk to shared model servers (vLLM, TEI) by URL.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from redline.errors import ConfigError, MissingDependencyError
from redline.types import RefineResult
from redline.workflows._batch_output import result_line
from redline.workflows._run import Runner
from redline.workflows.config import RunSpec

__all__ = ["aray_batch"]

# What a worker needs from the driver's environment to reach the same servers.
_PASSED_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "REDLINE_MODEL", "REDLINE_MODEL_PATH",
               "OLLAMA_HOST", "LANGGRAPH_STRICT_MSGPACK")

_PROBE_TIMEOUT = 5.0
"""Seconds a TCP connect to an explicit Ray address may take before the batch gives up."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray (a batch on a Ray cluster)", "ray") from None
    return ray


def _worker_env(api_key: str | None, sandbox_parallel: int) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if os.environ.get(k)}
    if api_key:
        env["OPENAI_API_KEY"] = api_key
    # One CPU per worker: its sandbox runs one program at a time, so N workers on a node
    # run N programs, not N x the node's CPUs.
    env["REDLINE_SANDBOX_PARALLEL"] = str(sandbox_parallel)
    return env


def _refine_shard(spec_json: str, items: list[dict[str, Any]], concurrency: int
                  ) -> list[dict[str, Any]]:
    """A Ray task: refine one shard, return each item's result document."""
    from redline.workflows.batch import BatchItem, abatch

    spec = RunSpec.model_validate_json(spec_json)
    settings = spec.model_dump(mode="json")

    async def run() -> list[dict[str, Any]]:
        config = spec.build()
        try:
            batch = [BatchItem.model_validate(i).to_task(system=spec.system) for i in items]
            return [result_line(result, settings)
                    async for result in abatch(batch, config, concurrency=concurrency)]
        finally:
            await config.model.aclose()

    return asyncio.run(run())


def _result(document: Mapping[str, Any]) -> RefineResult:
    return RefineResult.from_document({k: v for k, v in document.items() if k != "id"})


async def aray_batch(spec: RunSpec, items: Sequence[Any], out: str | Path, *, address: str,
                     concurrency: int = 8, resume: bool = False, api_key: str | None = None,
                     shard_size: int | None = None, sandbox_parallel: int = 1,
                     on_start: Callable[[Any], Any] | None = None,
                     on_result: Callable[[RefineResult], Any] | None = None,
                     summary: Any = None) -> Any:
    """Run a batch on a Ray cluster, writing `out` as `arun_batch` does.

    Args:
        spec: the run's settings (each worker builds its run from them).
        items: the batch (`read_items`).
        out: the output file (written by this process only).
        address: a Ray address (``ray://host:10001``, ``host:6379``), ``auto`` (the
            cluster ``RAY_ADDRESS`` or a running local one names), or ``local`` (a
            private Ray instance started for this batch).
        concurrency: items in flight per worker.
        resume: continue an existing output file.
        api_key: the model's API key, passed to the workers in Ray's runtime
            environment (never written to the output).
        shard_size: items per Ray task (default: `concurrency`); a shard in flight when
            the driver dies runs again on resume.
        sandbox_parallel: sandbox runs at once per worker (``REDLINE_SANDBOX_PARALLEL``).
        on_start: called with the summary once the preflight passed and the output file
            is ready.
        on_result: called with each result once its line is written.
        summary: a `BatchSummary` to update as shards finish.

    Returns:
        The `BatchSummary`.

    Raises:
        ConfigError: a bad output file or spec, a failed preflight (checked here, before
            any shard is sent), or a Ray address that cannot be reached.
        MissingDependencyError: ``ray`` is not installed (``redline[ray]``).
    """
    from redline.workflows.batch import open_output

    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    size = shard_size or concurrency
    if size < 1:
        raise ConfigError(f"shard size must be at least 1, got {size}")
    ray = _ray()
    _check_listening(address)
    output, summary = open_output(spec, items, out, resume=resume, summary=summary)
    config = spec.build(api_key=api_key)
    try:
        await Runner(config).preflight()  # the driver checks before any shard leaves
    finally:
        await config.model.aclose()
    todo = [item for item in items if item.id not in output.done]
    started_here = not ray.is_initialized()
    try:
        # In this thread: Ray installs its signal handlers from the main thread only.
        _connect(ray, address, _worker_env(api_key, sandbox_parallel))
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ...
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: "
                          f"{type(exc).__name__}: {exc}") from exc
    output.start()
    summary.torn_line = output.torn_line
    if on_start is not None:
        on_start(summary)
    remote = ray.remote(num_cpus=1, max_retries=2)(_refine_shard)
    spec_json = spec.model_dump_json()
    pending = []
    for start in range(0, len(todo), size):
        shard = todo[start:start + size]
        summary.started += len(shard)
        pending.append(remote.remote(spec_json, [i.model_dump(mode="json") for i in shard],
                                     concurrency))
    try:
        while pending:
            done, pending = await asyncio.to_thread(ray.wait, pending, num_returns=1)
            for document in await asyncio.to_thread(ray.get, done[0]):
                if document["id"] in output.done:
                    continue  # a shard retried by Ray after a worker died: never twice
                await asyncio.to_thread(output.write, document)
                result = _result(document)
                summary.add(result)
                if on_result is not None:
                    on_result(result)
    except asyncio.CancelledError:
        summary.interrupted = True
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return summary


def _check_listening(address: str) -> None:
    """Fail at once when no Ray cluster listens at an explicit ``HOST:PORT`` /
    ``ray://HOST:PORT``: nothing accepts a connection, or what does is no gRPC server.

    ``ray.init`` retries an unreachable GCS for minutes, and ignores SIGTERM meanwhile.
    ``auto`` and ``local`` keep Ray's own behaviour; a malformed address is left to Ray,
    which rejects it at once.

    Raises:
        ConfigError: nothing accepts a TCP connection at the address or answers an
            HTTP/2 preface within `_PROBE_TIMEOUT` seconds, the answer is not HTTP/2 (unless
            ``RAY_USE_TLS`` is set), or the port is out of range.
    """
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    if not 0 < int(port) < 65536:
        raise ConfigError(f"the Ray address {address!r} has port {port}, outside 1-65535")
    try:
        with socket.create_connection((host.strip("[]"), int(port)),
                                      timeout=_PROBE_TIMEOUT) as conn:
            speaks_grpc = _speaks_http2(conn)
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {_PROBE_TIMEOUT:g} s"
        elif isinstance(exc, socket.gaierror):
            reason = f"cannot resolve {host!r}: {exc.strerror}"
        else:
            reason = exc.strerror or str(exc)
        raise ConfigError(f"no Ray cluster answers at {address} ({reason}): start one with "
                          "`ray start --head` or pass --ray auto") from None
    if not speaks_grpc and os.environ.get("RAY_USE_TLS", "").lower() not in ("1", "true"):
        raise ConfigError(f"something listens at {address}, but not a Ray cluster (it does not "
                          "speak gRPC): check the port (`ray status` prints the address) or "
                          "pass --ray auto")


# An HTTP/2 client's connection preface and an empty SETTINGS frame (RFC 9113, 3.4).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_http2(conn: socket.socket) -> bool:
    """Whether the peer answers an HTTP/2 preface with its SETTINGS frame, as every gRPC
    server (Ray's GCS, the Ray Client server) does. A listener that is no Ray cluster
    would leave ``ray.init`` retrying for minutes.

    Raises:
        OSError: the connection failed (a timeout: no answer in `_PROBE_TIMEOUT`).
    """
    conn.sendall(_H2_PREFACE)
    header = b""
    while len(header) < 9:
        chunk = conn.recv(9 - len(header))
        if not chunk:
            return False  # closed on us: an HTTP/1 server, or anything else
        header += chunk
    return header[3] == 4  # the frame type: SETTINGS


def _connect(ray: Any, address: str, env: dict[str, str]) -> None:
    runtime_env = {"env_vars": env}
    if address == "local":
        ray.init(runtime_env=runtime_env, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False,
                 configure_logging=False)

"""``redline serve``: an OpenAI-compatible refining proxy on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, cast

import click

from redline.cli import cli
from redline.cli._options import (
    check_base_url,
    explicit_options,
    read_key_file,
    reviser_settings,
    run_options,
    spec_from_options,
)
from redline.errors import ConfigError

# With --config, the runs are in the file: only these run options may come with it.
_WITH_CONFIG = {"model", "upstream", "base_url", "api_key_file", "model_path",
                "reviser_model", "reviser_base_url", "reviser_price"}
_SERVER_OPTIONS = {"config_file", "run_name", "host", "port", "concurrency", "queue",
                   "max_body", "request_timeout", "shutdown_grace", "token_ceiling", "api_key",
                   "log_level", "loop", "quiet"}


def _serve_options(command: Any) -> Any:
    """`run_options` without its ``--api-key``: here ``--api-key`` is the server's own
    key, and the upstream's comes from ``$OPENAI_API_KEY`` or ``--api-key-file`` (never
    from the command line, which every process on the host can read)."""
    command = run_options(command)
    command.__click_params__ = [p for p in command.__click_params__ if p.name != "api_key"]
    return command


@cli.command("serve")
@click.option("--upstream", metavar="URL",
              help="The upstream OpenAI-compatible server's base URL (vLLM, Ollama, OpenAI: "
                   "http://127.0.0.1:8000/v1). Default: $OPENAI_BASE_URL, else the embedded "
                   "model.")
@click.option("--config", "config_file", metavar="FILE",
              help="Named runs in a TOML or JSON file ([runs.NAME] tables of RunSpec fields); "
                   "each is served as model redline/NAME.")
@click.option("--name", "run_name", metavar="NAME",
              help="The run's name without --config (its model is redline/NAME). Default: "
                   "the preset's name, else 'refine'.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (0.0.0.0 exposes it to the network).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="The port (0: any free one; the address is printed).")
@click.option("--api-key", envvar="REDLINE_SERVE_API_KEY", metavar="KEY",
              help="Require 'Authorization: Bearer KEY' from clients.  "
                   "[env: REDLINE_SERVE_API_KEY]")
@click.option("--concurrency", type=int, default=16, show_default=True,
              help="Chat requests handled at once.")
@click.option("--queue", type=int, default=64, show_default=True,
              help="Requests waiting for a slot; the next one is answered 429 + Retry-After.")
@click.option("--max-body", type=int, default=1 << 20, show_default=True, metavar="BYTES",
              help="The largest request body (larger: 413).")
@click.option("--request-timeout", type=float, default=300.0, show_default=True,
              metavar="SECONDS",
              help="Caps every run's --max-seconds; a request still running 5 s later gets "
                   "504, one that waits this long for a slot 503.")
@click.option("--shutdown-grace", type=click.FloatRange(min=0), default=5.0,
              show_default=True, metavar="SECONDS",
              help="On Ctrl-C / SIGTERM, how long requests in flight may run on before "
                   "they are cancelled and answered 503 shutting_down (refines take "
                   "minutes: match your orchestrator's termination grace period).")
@click.option("--token-ceiling", type=int, default=100_000, show_default=True, metavar="N",
              help="The most tokens one request's loop may spend, whatever it asks "
                   "(a request's max_tokens caps its loop below this).")
@_serve_options
@click.option("--log-level", type=click.Choice(["warning", "info", "debug"]),
              default="warning", show_default=True,
              help="Server log level (info: one access line per request).")
@click.option("--loop", type=click.Choice(["auto", "asyncio", "uvloop"]), default="auto",
              show_default=True,
              help="The event loop: uvloop when it is "
                   "installed (pip install 'redline[serve]'), else asyncio's own.")
@click.option("-q", "--quiet", is_flag=True, help="Nothing on stderr but errors.")
def serve_command(**opts: Any) -> None:
    """Serve refine runs over the OpenAI chat-completions API.

    POST /v1/chat/completions with model "redline/NAME" refines the last user message
    with run NAME against the upstream model and answers a normal chat completion (its
    usage sums every call of the loop) plus a "redline" field: score, stop reason,
    rounds, critiques. stream=true streams the answer as SSE chunks, with progress as
    SSE comments. Requests the loop cannot refine (tools, images, response_format) go
    to the upstream model untouched; n > 1 and logprobs are refused (400). GET
    /v1/models lists the runs; /healthz and /metrics (Prometheus text) too.

    The run is described by the options of `redline refine` (--preset, -c, budgets,
    --model), or by several named runs in --config FILE. Every run is compiled and
    preflighted at startup (exit 2 with one line if one cannot work). The upstream's
    key comes from $OPENAI_API_KEY or --api-key-file and is never echoed or logged.

    \b
    Examples:
      redline serve --upstream http://127.0.0.1:8000/v1 --model qwen2.5-7b --preset self-refine
      redline serve --config runs.toml --port 8080 --api-key "$KEY"
      redline serve --preset best-of-n -n 3      # the embedded model, model redline/best-of-n

    \b
    Exit codes: 0 stopped (Ctrl-C / SIGTERM: requests in flight get --shutdown-grace
    seconds to finish, then are cancelled); 2 bad configuration or a failed preflight,
    or the port is taken (one line, nothing served).
    """
    quiet = opts["quiet"]
    logging.getLogger("redline").setLevel(logging.ERROR if quiet else logging.WARNING)
    for flag, key, low in (("--concurrency", "concurrency", 1), ("--queue", "queue", 0),
                           ("--max-body", "max_body", 1), ("--token-ceiling", "token_ceiling", 1)):
        if opts[key] < low:
            raise ConfigError(f"{flag} must be at least {low}, got {opts[key]}")
    if not opts["request_timeout"] > 0:
        raise ConfigError(f"--request-timeout must be positive, got {opts['request_timeout']:g}")
    if opts["upstream"] is not None:
        if opts["base_url"] is not None:
            raise ConfigError("give --upstream or --base-url, not both (they are the same)")
        opts["base_url"] = check_base_url(opts["upstream"])
    specs = _specs(opts)
    upstream_key = read_key_file(opts["api_key_file"]) if opts["api_key_file"] else None

    from redline.serve import RunTable, ServeSettings, begin_shutdown, create_app

    settings = ServeSettings(api_key=opts["api_key"] or None, concurrency=opts["concurrency"],
                             queue=opts["queue"], max_body_bytes=opts["max_body"],
                             request_timeout=opts["request_timeout"])
    try:
        import uvicorn
    except ImportError:
        from redline.errors import MissingDependencyError

        raise MissingDependencyError("redline serve (uvicorn is missing)", "serve") from None
    sock = _bind(opts["host"], opts["port"])

    class _GracefulServer(uvicorn.Server):
        """uvicorn's server, whose stop on SIGINT / SIGTERM is the end of the command.

        uvicorn stops gracefully on either (in-flight requests get
        ``timeout_graceful_shutdown`` seconds, then are cancelled), then raises the signal
        again for its default action: exit 143, or ``KeyboardInterrupt`` (130). A stop
        asked for is the normal end of ``redline serve``: exit 0.
        """

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Requests cut off when the grace ends are answered 503, not a plain 500.
            begin_shutdown(cast(Any, self.config.app))  # the app create_app made
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield  # only the main thread may set handlers
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    async def run() -> None:
        runs = RunTable.from_specs(specs, api_key=upstream_key,
                                   token_ceiling=opts["token_ceiling"],
                                   seconds_ceiling=opts["request_timeout"])
        try:
            await runs.preflight()
            config = uvicorn.Config(create_app(runs, settings), log_level=opts["log_level"],
                                    access_log=opts["log_level"] != "warning",
                                    timeout_graceful_shutdown=opts["shutdown_grace"])
            server = _GracefulServer(config)
            host, port = sock.getsockname()[:2]
            if not quiet:
                models = ", ".join(f"redline/{n}" for n in runs.names)
                click.echo(f"redline: serving {models} on http://{host}:{port}/v1", err=True)
            await server.serve(sockets=[sock])
        finally:
            await runs.aclose()

    try:  # errors: the group's boundary (cli/_boundary.py)
        with asyncio.Runner(loop_factory=_loop_factory(opts["loop"])) as runner:
            runner.run(run())
    finally:
        sock.close()


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop for ``uvloop`` (and ``auto`` when it is installed), else None
    (asyncio's own)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            from redline.errors import MissingDependencyError

            raise MissingDependencyError("redline serve --loop uvloop (uvloop is missing)",
                                         "serve") from None
        return None
    return uvloop.new_event_loop


def _specs(opts: dict[str, Any]) -> dict[str, Any]:
    """The named `RunSpec`s the options describe."""
    from redline.serve import default_run_name, load_specs
    from redline.serve.runs import RUN_NAME

    explicit = explicit_options(opts)
    if opts["config_file"] is None:
        spec = spec_from_options(opts, explicit)
        name = opts["run_name"] or default_run_name(spec)
        if not RUN_NAME.match(name):
            raise ConfigError(f"--name {name!r}: use lowercase letters, digits, '.', '_' and "
                              "'-' (it becomes the model name redline/<name>)")
        return {name: spec}
    stray = sorted(explicit - _WITH_CONFIG - _SERVER_OPTIONS)
    if stray:
        ctx = click.get_current_context()
        flags = [max(p.opts, key=len) for p in ctx.command.params if p.name in stray]
        raise ConfigError(f"with --config, put {', '.join(flags)} in the file's runs "
                          "(only --upstream, --model, --model-path, --api-key-file and "
                          "--reviser-model/--reviser-base-url/--reviser-price apply to every run)")
    if opts["run_name"] is not None:
        raise ConfigError("--name names the run of the command line; with --config, runs are "
                          "named by their tables")
    from redline.workflows import ModelSettings

    reviser = reviser_settings(opts)
    specs = load_specs(opts["config_file"])
    filled = {}
    for name, spec in specs.items():
        model = spec.model.model_copy(update={
            k: v for k, v in (("name", opts["model"]), ("base_url", opts["base_url"]),
                              ("model_path", opts["model_path"]))
            if v is not None and getattr(spec.model, k) is None})
        update: dict[str, Any] = {"model": model}
        if reviser is not None and _revises(spec):
            own = spec.reviser_model or ModelSettings()
            update["reviser_model"] = own.model_copy(update={
                k: v for k, v in reviser.items() if v is not None and getattr(own, k) is None})
        filled[name] = spec.model_copy(update=update)
    return filled


def _revises(spec: Any) -> bool:
    """Whether `spec`'s run revises (plain refine, or a preset that takes a reviser)."""
    from redline.plugins import load_preset

    return spec.preset is None or load_preset(spec.preset).takes_reviser_model


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so a taken port is a one-line error.

    Raises:
        ConfigError: the address cannot be bound.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock

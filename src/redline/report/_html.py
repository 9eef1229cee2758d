"""The report page: one self-contained HTML file (styles, script, plots and data inline).

The summary, plots and method table are written here, escaped with `html.escape`; the
item list and an item's details are drawn by the page's script from the embedded JSON
(`_data.page_data`), only for what is on screen, so 10,000 items open in seconds. A
Content-Security-Policy allows no network at all and only the page's own script (by
its hash): even a text that escaped escaping could not run.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from redline._version import __version__
from redline.report import _svg
from redline.report._data import embed_json, page_data
from redline.report._load import Results
from redline.report._stats import Distribution, MethodRow, Summary, by_method, summarize

__all__ = ["render_report"]

_STOP_ORDER = ["threshold", "verified", "sampled", "converged", "budget", "interrupted", "error"]


def render_report(results: Results, *, title: str | None = None) -> str:
    """The report on `results` as one HTML page (a string)."""
    script = _asset("page.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
           "img-src data:; base-uri 'none'; form-action 'none'")
    name = title or f"redline report: {Path(results.source).name or 'results'}"
    summary = summarize(results.entries)
    compare = results.kind == "compare"
    parts = [
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{escape(name)}</title><style>{_asset('page.css')}</style></head><body>",
        f"<header><h1>{escape(name)}</h1><p class=\"source\">{escape(_describe(results))}"
        f" · written by redline {escape(__version__)}</p>",
        "".join(f'<p class="notes">{escape(note)}</p>' for note in results.notes),
        "</header><main>",
        _summary_section(summary, compare),
    ]
    if compare:
        parts.append(_compare_section(results))
    parts += [_settings_section(results), _items_section(results),
              "</main>",
              f'<script type="application/json" id="redline-data">'
              f"{embed_json(page_data(results))}</script>",
              f"<script>{script}</script></body></html>\n"]
    return "".join(parts)


def _asset(name: str) -> str:
    return resources.files("redline.report").joinpath(name).read_text(encoding="utf-8")


def _describe(results: Results) -> str:
    what = {"result": "one refine result", "batch": "a batch output",
            "compare": "a compare output", "results": "result documents"}[results.kind]
    ids = len({e.id for e in results.entries})
    counted = f"{ids:,} item{'s' if ids != 1 else ''}"
    if results.kind == "compare":
        counted += f" × {len(results.method_names)} methods"
    return f"{results.source} ({what}, {counted})"


def _card(value: str, label: str, cls: str = "") -> str:
    return (f'<div class="card {cls}"><div class="value">{escape(value)}</div>'
            f'<div class="label">{escape(label)}</div></div>')


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def _money(value: float) -> str:
    return f"${value:,.4f}"


def _caption(dist: Distribution, fmt: Callable[[float], str]) -> str:
    return (f"total {fmt(dist.total)} · mean {fmt(dist.mean)} · median {fmt(dist.median)}"
            f" · p90 {fmt(dist.p90)} · max {fmt(dist.max)}")


def _int(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _secs(value: float) -> str:
    return f"{value:,.2f} s"


def _summary_section(s: Summary, compare: bool) -> str:
    success = ("correct (evaluator; else threshold reached or verified)" if compare
               else "success: threshold reached or verified")
    cards = [
        _card(f"{s.items:,}", "runs" if compare else "items", "items"),
        _card(_pct(s.solved, s.items), f"{success} ({s.solved:,})", "success"),
        _card(f"{s.stop_reasons.get('error', 0):,}", "ended with an error", "errors"),
        _card(f"{s.improved:,} / {s.unchanged:,} / {s.regressed:,}",
              "improved / unchanged / worse than the draft", "moves"),
        _card(f"{s.tokens.total:,.0f}", "tokens", "tokens"),
        _card(f"{s.calls.total:,.0f}", "LLM calls", "calls"),
        _card(_money(s.cost.total) if s.cost.total else "–",
              "cost" if s.cost.total else "cost (no price given: --price)", "cost"),
        _card(f"{s.seconds.total:,.1f} s", "seconds (summed over runs)", "seconds"),
    ]
    stops = sorted(s.stop_reasons.items(),
                   key=lambda kv: (_STOP_ORDER.index(kv[0]) if kv[0] in _STOP_ORDER else 99))
    unplotted = (f" {s.unplotted:,} run(s) without a draft or best score are not shown."
                 if s.unplotted else "")
    plots = [
        _figure(_svg.bars(stops, title="Stop reasons"), ""),
        _figure(_svg.histogram(s.rounds, integer=True, title="Revision rounds per run"),
                f"mean {sum(s.rounds) / len(s.rounds) if s.rounds else 0:.2f}"),
        _figure(_svg.scatter(s.pairs, title="Score: draft → best", x_label="draft score",
                             y_label="best score"),
                "Above the diagonal: improved; on it: unchanged; below: worse." + unplotted),
        _figure(_svg.histogram(s.tokens.values, title="Tokens per run"),
                _caption(s.tokens, _int)),
        _figure(_svg.histogram(s.calls.values, integer=True, title="LLM calls per run"),
                _caption(s.calls, _int)),
        _figure(_svg.histogram(s.cost.values, title="Cost per run ($)"),
                _caption(s.cost, _money)) if s.cost.total else "",
        _figure(_svg.histogram(s.seconds.values, title="Seconds per run"),
                _caption(s.seconds, _secs)),
    ]
    return (f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(cards)}</div>'
            f'<div class="plots">{"".join(plots)}</div></section>')


def _figure(plot: str, caption: str) -> str:
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{plot}{text}</figure>"


def _compare_section(results: Results) -> str:
    rows = by_method(results.entries, results.method_names)
    head = ("<tr><th>method</th><th class=\"num\">items</th><th class=\"num\">correct</th>"
            "<th class=\"num\">threshold / verified</th><th class=\"num\">flips to correct"
            "</th><th class=\"num\">flips to wrong</th><th class=\"num\">errors</th>"
            "<th class=\"num\">tokens</th><th class=\"num\">tokens / item</th>"
            "<th class=\"num\">calls / item</th><th class=\"num\">cost</th>"
            "<th class=\"num\">seconds / item</th></tr>")
    body = "".join(_method_row(row) for row in rows)
    plot = _svg.bars([(r.method, r.correct) for r in rows], title="Correct per method")
    about = []
    if results.evaluator:
        about.append(f"<p>Evaluator: {escape(results.evaluator)}</p>")
    if results.budget:
        about.append("<p>Matched budget: <code>"
                     f"{escape(json.dumps(results.budget, ensure_ascii=False))}</code></p>")
    return (f'<section id="methods"><h2>Methods side by side</h2>{"".join(about)}'
            f'<table id="method-table">{head}{body}</table>'
            f'<div class="plots">{_figure(plot, "")}</div></section>')


def _method_row(r: MethodRow) -> str:
    cells = [f"{r.runs:,}", f"{r.correct:,} ({_pct(r.correct, r.judged)})",
             f"{r.reached:,} ({_pct(r.reached, r.runs)})", f"{r.fixed:,}", f"{r.broken:,}",
             f"{r.errors:,}", f"{r.tokens.total:,.0f}", f"{r.tokens.mean:,.0f}",
             f"{r.calls.mean:,.1f}", _money(r.cost.total), f"{r.seconds.mean:,.2f}"]
    return (f'<tr data-method="{escape(r.method)}"><td>{escape(r.method)}</td>'
            + "".join(f'<td class="num">{escape(c)}</td>' for c in cells) + "</tr>")


def _settings_section(results: Results) -> str:
    def block(label: str, value: Any) -> str:
        text = "null" if value is None else json.dumps(value, indent=2, ensure_ascii=False)
        return (f"<details open><summary>{escape(label)}</summary>"
                f"<pre class=\"spec\">{escape(text)}</pre></details>")

    if results.kind == "compare":
        inner = "".join(block(f"{name}", spec) for name, spec in results.methods.items())
        title = "Methods' settings (RunSpec)"
    elif results.spec is not None:
        inner, title = block("RunSpec", results.spec), "Run settings"
    else:
        inner, title = "<p class=\"muted\">The file does not say.</p>", "Run settings"
    return f'<section id="settings"><h2>{title}</h2>{inner}</section>'


def _items_section(results: Results) -> str:
    if results.kind == "compare":
        columns = "".join(f"<th>{escape(m)}</th>" for m in results.method_names)
    else:
        columns = ('<th>stop</th><th class="num">draft → best</th><th class="num">rounds</th>'
                   '<th class="num">tokens</th><th>trajectory</th>')
    outcomes = "".join(f'<option value="{v}">{label}</option>' for v, label in (
        ("", "any outcome"), ("solved", "solved"), ("unsolved", "not solved"),
        ("error", "errors"), ("improved", "improved"), ("unchanged", "unchanged"),
        ("regressed", "worse than the draft")))
    return (
        '<section id="items"><h2>Items</h2><div class="filters">'
        '<input type="search" id="f-q" placeholder="search id, task or text" '
        'aria-label="search">'
        '<select id="f-method" aria-label="method"><option value="">any method</option>'
        '</select>'
        '<select id="f-stop" aria-label="stop reason"><option value="">any stop reason'
        '</option></select>'
        f'<select id="f-outcome" aria-label="outcome">{outcomes}</select>'
        '<label>best score ≥ <input type="number" id="f-min" min="0" max="1" step="0.05">'
        '</label><label>≤ <input type="number" id="f-max" min="0" max="1" step="0.05">'
        '</label></div>'
        '<p id="count" class="muted"></p>'
        f'<table id="item-table"><thead><tr><th>id</th><th>task</th>{columns}</tr></thead>'
        '<tbody></tbody></table>'
        '<div class="pager"><button type="button" id="prev">← previous</button>'
        '<span id="page"></span><button type="button" id="next">next →</button></div>'
        '<noscript><p>The item list needs JavaScript.</p></noscript>'
        '<div id="detail"></div></section>')

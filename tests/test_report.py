"""`redline report`: reports of real runs (batch, compare, one --json result) opened in
headless Chromium; the rendered DOM is checked (summary plots, the item list, an item's
trajectory, diffs, critiques, reflections), and so are escaping and the absence of any
network request. Screenshots are kept under pytest's tmp dir (their paths are printed).

Chromium is the Debian package ``chromium`` (.ci/run installs it); it is driven with
``--dump-dom`` and ``--screenshot`` only, so nothing is downloaded at test time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from test_report_data import (
    PAYLOAD,
    SPEC,
    all_runs,
    compare_runs,
    improves,
    write_batch,
    write_compare,
    write_single,
)

from redline.cli import cli
from redline.report import _svg as svg
from redline.report import load_results, render_report
from redline.report._data import embed_json
from redline.types import RefineResult

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium: apt-get install -y chromium")

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Node:
    """An element of the rendered DOM: tag, attributes, children (nodes and strings)."""

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag, self.attrs = tag, attrs
        self.children: list[Node | str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                    found.append(child)
                found += child.all(tag, cls)
        return found

    def one(self, tag: str | None = None, cls: str | None = None, id: str | None = None
            ) -> Node:
        matches = [n for n in self.all(tag, cls) if id is None or n.attrs.get("id") == id]
        assert len(matches) == 1, f"{len(matches)} matches for {tag}.{cls}#{id}"
        return matches[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for k in range(len(self.stack) - 1, 0, -1):
            if self.stack[k].tag == tag:
                del self.stack[k:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    return builder.root


def chromium(page: Path, tmp: Path, *args: str, fragment: str = ""
             ) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on `page` (with ``#fragment``) with no DNS at all."""
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-first-run",
               "--disable-extensions", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={tmp / 'chromium-profile'}",
               "--host-resolver-rules=MAP * ~NOTFOUND",
               "--enable-logging=stderr", "--v=0", *args,
               page.resolve().as_uri() + (f"#{fragment}" if fragment else "")]
    if os.geteuid() == 0:  # Chromium refuses to run as root with its sandbox
        command.insert(1, "--no-sandbox")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def render(page: Path, tmp: Path, fragment: str = "") -> Node:
    """The DOM after the page's script ran; fails on any console message (a script
    error, a blocked request)."""
    done = chromium(page, tmp, "--dump-dom", fragment=fragment)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    dom = parse(done.stdout)
    assert dom.one("body").attrs.get("data-ready") == "1"  # the script ran to its end
    return dom


def screenshot(page: Path, tmp: Path, name: str, fragment: str = "") -> Path:
    shot = tmp / name
    chromium(page, tmp, f"--screenshot={shot}", "--window-size=1280,1400",
             fragment=fragment)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")
    return shot


def rows(dom: Node) -> list[str]:
    body = dom.one("table", id="item-table").one("tbody")
    return [tr.attrs["data-id"] for tr in body.all("tr")]


@pytest.fixture(scope="module")
def runs() -> list[RefineResult]:
    return asyncio.run(all_runs())


@pytest.fixture(scope="module")
def batch_report(runs: list[RefineResult], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`redline report` on a batch output of five real runs (one ended with an error)."""
    folder = tmp_path_factory.mktemp("batch")
    source = write_batch(folder / "out.jsonl", runs)
    result = CliRunner().invoke(cli, ["report", str(source), "-o", str(folder / "report.html")])
    assert result.exit_code == 0, result.output
    assert "5 items (5 runs)" in result.output
    return folder / "report.html"


# --- the page in a browser -----------------------------------------------------------

@needs_chromium
def test_the_summary_shows_counts_stops_and_the_draft_to_best_scatter(
        batch_report: Path, runs: list[RefineResult], tmp_path: Path) -> None:
    dom = render(batch_report, tmp_path)
    summary = dom.one("section", id="summary")
    cards = {c.one("div", "label").text(): c.one("div", "value").text()
             for c in summary.all("div", "card")}
    assert cards["items"] == "5"
    assert cards["success: threshold reached or verified (3)"] == "60.0%"
    assert cards["ended with an error"] == "1"
    assert cards["improved / unchanged / worse than the draft"] == "4 / 0 / 0"
    stops = summary.one("svg", "bars")
    assert [t.text() for t in stops.all("text", "label")] == ["threshold", "budget", "error"]
    assert [t.text() for t in stops.all("text", "value")] == ["3", "1", "1"]
    scatter = summary.one("svg", "scatter")
    points = scatter.all("circle", "pt")
    # improves 0.4→0.95, hostile 0.3→0.5, and reflects and debugs both 0.2→1 (one dot).
    assert len(points) == 3 and all("up" in p.classes for p in points)
    assert sorted(p.one("title").text() for p in points) == [
        "0.2 → 1: 2 items", "0.3 → 0.5: 1 item", "0.4 → 0.95: 1 item"]
    assert "1 run(s) without a draft or best score" in summary.text()
    rounds = summary.all("svg", "histogram")[0]
    assert [b.one("title").text() for b in rounds.all("rect", "bar")] == [
        "0: 1", "1: 3", "2: 0", "3: 1"]
    spec = dom.one("section", id="settings").one("pre", "spec").text()
    assert json.loads(spec) == SPEC
    assert rows(dom) == [r.task.id for r in runs]
    assert dom.one("p", id="count").text() == "Items 1–5 of 5"
    assert dom.one("div", id="detail").children == []  # nothing opened, nothing drawn


@needs_chromium
def test_an_items_trajectory_diffs_critiques_and_reflections(
        batch_report: Path, tmp_path: Path) -> None:
    dom = render(batch_report, tmp_path, "item=reflects")
    detail = dom.one("div", id="detail")
    assert "Item reflects" in detail.one("h2").text()
    plot = detail.one("svg", "trajectory")
    dots = plot.all("circle", "tp")
    assert [d.one("title").text() for d in dots] == [
        "round 0: 0.20", "round 1: 0.20", "round 2: 0.20", "round 3: 1.00"]
    assert ["best" in d.classes for d in dots] == [False, False, False, True]
    assert len(plot.one("polyline", "tl").attrs["points"].split()) == 4
    assert [h.text() for h in detail.all("h4", "round")] == [
        "Round 0 (draft)", "Round 1", "Round 2", "Round 3"]
    reflections = [r.one("pre").text() for r in detail.all("div", "reflection")]
    assert reflections == ["lesson one", "lesson two", "lesson three"]
    assert [li.text() for li in detail.one("ol", "memory").all("li")] == [
        "lesson two", "lesson three"]
    diffs = detail.all("pre", "diff")
    assert [[(s.attrs["class"], s.text()) for s in d.all("span")] for d in diffs][0] == [
        ("hunk", "@@ -1 +1 @@"), ("del", "-try1"), ("add", "+try2")]
    feedback = [p.text() for p in detail.all("pre", "feedback")]
    assert feedback == ["test failed for 'try1'", "test failed for 'try2'",
                        "test failed for 'try3'"]
    evidence = detail.all("details", "evidence")
    assert len(evidence) == 3
    assert json.loads(evidence[0].one("pre").text()) == {
        "failing": [{"test": "assert add(1, 2) == 3", "error": "AssertionError"}]}
    usage = detail.one("table", "usage").all("tr")
    assert [tr.all("td")[0].text() for tr in usage[1:]] == ["0", "1", "2", "3", "total"]
    screenshot(batch_report, tmp_path, "batch-item-reflects.png", "item=reflects")


@needs_chromium
def test_self_debug_explanations_and_errors_are_shown(batch_report: Path,
                                                     tmp_path: Path) -> None:
    debugs = render(batch_report, tmp_path, "item=debugs").one("div", id="detail")
    explanation = debugs.one("details", "explanation")
    assert "open" in explanation.attrs
    assert explanation.one("pre").text() == "Line 2 subtracts b; add(1, 2) is -1."
    assert [s.text() for s in debugs.one("pre", "diff").all("span", "add")] == [
        "+    return a + b"]
    broken = render(batch_report, tmp_path, "item=breaks").one("div", id="detail")
    assert broken.one("pre", "error-text").text() == (
        "critique failed: critic 'broken' failed: ZeroDivisionError: boom")
    assert "error" in broken.one("span", "badge").classes


@needs_chromium
@pytest.mark.parametrize(("fragment", "expected"), [
    ("stop=error", ["breaks"]),
    ("outcome=unsolved", [f"hostile{PAYLOAD}", "breaks"]),
    ("outcome=improved&min=0.9", ["improves", "reflects", "debugs"]),
    ("max=0.6", [f"hostile{PAYLOAD}"]),
    ("q=TRY3", ["reflects"]),          # a candidate's text, case-insensitive
    ("q=add(a", ["debugs"]),           # the task's text
    ("q=nothing-like-this", []),
])
def test_the_item_list_filters_by_stop_outcome_score_and_text(
        batch_report: Path, tmp_path: Path, fragment: str, expected: list[str]) -> None:
    fragment = "&".join(f"{k}={quote(v)}" for k, v in
                        (part.split("=", 1) for part in fragment.split("&")))
    dom = render(batch_report, tmp_path, fragment)
    assert rows(dom) == expected


@needs_chromium
def test_a_candidates_script_is_text_and_never_runs(batch_report: Path,
                                                    tmp_path: Path) -> None:
    html = batch_report.read_text()
    assert html.count("</script>") == 2  # the data block's and the page script's own ends
    data = html.split('id="redline-data">')[1].split("</script>")[0]
    assert "<" not in data and 'document.title=\\"pwned\\"' in data  # escaped JSON
    dom = render(batch_report, tmp_path, "item=" + quote(f"hostile{PAYLOAD}"))
    assert dom.one("head").one("title").text() == "redline report: out.jsonl"
    assert "data-pwned" not in dom.one("body").attrs
    assert dom.all("img") == []
    assert len(dom.all("script")) == 2
    detail = dom.one("div", id="detail")
    assert detail.one("h2").text() == f"Item hostile{PAYLOAD}"
    texts = [p.text() for p in detail.all("pre", "text")]
    assert texts[0] == f"draft {PAYLOAD}"
    assert detail.all("pre", "feedback")[0].text() == f"fix {PAYLOAD}"
    assert json.loads(detail.all("details", "evidence")[0].one("pre").text()) == {
        "hit": PAYLOAD}
    screenshot(batch_report, tmp_path, "batch-item-hostile.png",
               "item=" + quote(f"hostile{PAYLOAD}"))


@needs_chromium
def test_the_page_needs_no_network(batch_report: Path, tmp_path: Path) -> None:
    html = batch_report.read_text()
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html)
    assert csp is not None and "default-src 'none'" in csp.group(1)
    assert "script-src 'sha256-" in csp.group(1)  # only the page's own script runs
    external = re.compile(r"""(?:\b(?:src|href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//)"""
                          r"""|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)
    assert not external.search(html)
    dom = render(batch_report, tmp_path, "item=reflects")  # also: no console message
    for node in dom.all():
        for name in ("src", "href", "action"):
            assert not re.match(r"\s*(https?:)?//", node.attrs.get(name, "")), node.attrs


@needs_chromium
def test_the_item_list_is_paginated(tmp_path: Path) -> None:
    run = asyncio.run(improves())
    source = tmp_path / "many.jsonl"
    lines = [json.dumps({"redline_batch": 1, "spec": SPEC})]
    for k in range(120):
        lines.append(json.dumps({**run.document(SPEC), "id": f"item-{k:03d}"}))
    source.write_text("\n".join(lines) + "\n")
    page = tmp_path / "many.html"
    page.write_text(render_report(load_results(source)))
    first = render(page, tmp_path)
    assert rows(first) == [f"item-{k:03d}" for k in range(50)]
    assert first.one("span", id="page").text() == "page 1 of 3"
    last = render(page, tmp_path, "page=3")
    assert rows(last) == [f"item-{k:03d}" for k in range(100, 120)]
    assert last.one("p", id="count").text() == "Items 101–120 of 120"
    # Only the rows on screen are drawn: 120 items, 20 sparklines.
    assert len(last.all("svg", "spark")) == 20


@needs_chromium
def test_a_compare_report_puts_methods_side_by_side(tmp_path: Path) -> None:
    source = write_compare(tmp_path / "compare.jsonl", asyncio.run(compare_runs()))
    result = CliRunner().invoke(cli, ["report", str(source), "-q"])
    assert result.exit_code == 0 and result.output == ""
    page = tmp_path / "compare.html"  # the default name: RESULTS with .html
    dom = render(page, tmp_path, "item=improves")
    table = dom.one("table", id="method-table")
    cells = {tr.attrs["data-method"]: [td.text() for td in tr.all("td")]
             for tr in table.all("tr") if "data-method" in tr.attrs}
    assert cells["single"][:7] == ["single", "2", "1 (50.0%)", "2 (100.0%)", "0", "0", "0"]
    assert cells["self-refine"][:7] == ["self-refine", "2", "2 (100.0%)", "2 (100.0%)",
                                        "1", "0", "0"]
    assert "Evaluator: exact match on the final answer" in dom.one("section",
                                                                  id="methods").text()
    head = [th.text() for th in dom.one("table", id="item-table").one("thead").all("th")]
    assert head == ["id", "task", "single", "self-refine"]
    marks = {tr.attrs["data-id"]: [td.text() for td in tr.all("td", "mark")]
             for tr in dom.one("table", id="item-table").one("tbody").all("tr")}
    assert marks == {"improves": ["✗", "✓"], "reflects": ["✓", "✓"]}
    detail = dom.one("div", id="detail")
    assert [tr.all("td")[0].text() for tr in detail.one("table", "methods-of-item").all("tr")
            if tr.all("td")] == ["single", "self-refine"]
    assert len(detail.all("div", "entry")) == 2
    assert len(detail.all("svg", "trajectory")) == 2
    only = render(page, tmp_path, "method=single&outcome=solved")
    assert rows(only) == ["reflects"]
    screenshot(page, tmp_path, "compare-item-improves.png", "item=improves")


@needs_chromium
def test_a_single_json_result_makes_a_report(tmp_path: Path) -> None:
    run = asyncio.run(improves())
    source = write_single(tmp_path / "run.json", run)
    result = CliRunner().invoke(cli, ["report", str(source), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    dom = render(tmp_path / "r.html", tmp_path)
    assert rows(dom) == ["improves"]
    assert json.loads(dom.one("pre", "spec").text()) == SPEC
    screenshot(tmp_path / "r.html", tmp_path, "single-summary.png")


# --- the command's errors ------------------------------------------------------------

def test_report_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nope": 1}\n')
    result = CliRunner().invoke(cli, ["report", str(bad), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert result.output.startswith("redline: error: ") and "not a redline results file" \
        in result.output
    assert not (tmp_path / "r.html").exists()
    same = CliRunner().invoke(cli, ["report", str(bad), "-o", str(bad)])
    assert same.exit_code == 2 and "would replace its input" in same.output
    missing = CliRunner().invoke(cli, ["report", str(bad), "-o", str(tmp_path / "no/r.html")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    newer = tmp_path / "newer.jsonl"
    newer.write_text('{"redline_batch": 99, "spec": {}}\n')
    future = CliRunner().invoke(cli, ["report", str(newer), "-o", str(tmp_path / "n.html")])
    assert future.exit_code == 2 and "of format 99; this redline reads format 1" \
        in future.output
    empty = CliRunner().invoke(cli, ["report", str(bad), "-o", ""])
    assert empty.exit_code == 2 and "-o is empty" in empty.output
    assert not bad.with_suffix(".html").exists()
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # valid JSON, too deep to parse
    for source in (deep, bad.with_name("deep.jsonl")):
        source.write_text(deep.read_text() + "\n" + '{"nope": 1}\n')
        result = CliRunner().invoke(cli, ["report", str(source), "-o", str(tmp_path / "d.html")])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and "line 1: not JSON (nested too deep)" \
            in result.output
    assert not (tmp_path / "d.html").exists()


# --- the parts -----------------------------------------------------------------------

def test_embedded_json_cannot_close_its_script_element() -> None:
    value: dict[str, Any] = {"text": "</script><!-- <script> & \u2028", "n": [1, None]}
    text = embed_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


def test_the_scatter_classes_each_point_and_merges_equal_ones() -> None:
    plot = parse(svg.scatter([(0.2, 0.9), (0.5, 0.5), (0.8, 0.3), (0.2, 0.9)],
                             title="<t>", x_label="x", y_label="y"))
    points = plot.all("circle", "pt")
    assert [(sorted(p.classes), p.one("title").text()) for p in points] == [
        (["pt", "up"], "0.2 → 0.9: 2 items"), (["pt", "same"], "0.5 → 0.5: 1 item"),
        (["down", "pt"], "0.8 → 0.3: 1 item")]
    assert float(points[0].attrs["r"]) > float(points[1].attrs["r"])
    assert plot.one("svg").attrs["aria-label"] == "<t>"  # escaped in the source, read back
    assert "<t>" not in svg.scatter([], title="<t>", x_label="x", y_label="y")


def test_histograms_count_every_value_and_bars_escape_labels() -> None:
    values = [1.0, 2.0, 2.5, 10.0]
    plot = parse(svg.histogram(values, title="h", bins=3))
    heights = [b.one("title").text() for b in plot.all("rect", "bar")]
    assert heights == ["1–4: 3", "4–7: 0", "7–10: 1"]
    ints = parse(svg.histogram([0, 0, 2], title="r", integer=True))
    assert [b.one("title").text() for b in ints.all("rect", "bar")] == ["0: 2", "1: 0", "2: 1"]
    assert "no data" in parse(svg.histogram([], title="e")).text()
    labelled = svg.bars([("<b>x</b>", 2)], title="t")
    assert "<b>" not in labelled
    assert parse(labelled).one("text", "label").text() == "<b>x</b>"

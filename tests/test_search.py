"""Search sources: a real bm25s index over files the test writes, and HttpSearch against
a real loopback HTTP server (SearxNG's JSON, a custom API, failures, a closed port)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from redline.errors import ConfigError, FeedbackSourceError, MissingDependencyError
from redline.feedback_sources import BM25Index, FieldMap, Hit, HttpSearch, SearchSource

FILLER = ("The river runs past old mills and quiet farms, and the valley keeps its slow "
          "pace through the seasons. ") * 12


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    pytest.importorskip("bm25s")
    docs = tmp_path / "docs"
    (docs / "europe").mkdir(parents=True)
    (docs / "europe" / "france.md").write_text(
        "# France\n\nParis is the capital of France. France borders Spain and Belgium.\n")
    (docs / "europe" / "spain.txt").write_text("Madrid is the capital of Spain.\n")
    # 468 words: eight passages of up to 60 words; the tower's facts are in the last.
    (docs / "paris.md").write_text(
        f"# Paris\n\n{FILLER}\n\n{FILLER}\n\nThe Eiffel Tower was completed in 1889 for "
        "the World's Fair.\n")
    (docs / ".hidden.md").write_text("secret capital")
    (docs / "image.png").write_bytes(b"\x89PNG capital")
    rows = [{"doc": "q1", "name": "Rome", "body": "Rome is the capital of Italy.",
             "link": "https://example.org/rome"},
            {"name": "Lisbon", "body": "Lisbon is the capital of Portugal."}]
    (tmp_path / "cities.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return tmp_path


def build(corpus: Path) -> BM25Index:
    return BM25Index.build([corpus / "docs", corpus / "cities.jsonl"], passage_words=60,
                           text_field="body", title_field="name", id_field="doc",
                           url_field="link")


def test_files_folders_and_jsonl_become_passages(corpus: Path) -> None:
    index = build(corpus)
    ids = [d.id for d in index.documents]
    assert "docs/europe/france.md" in ids and "docs/europe/spain.txt" in ids
    assert [i for i in ids if i.startswith("docs/paris.md")] == [
        f"docs/paris.md#{n}" for n in range(1, 9)]
    assert "q1" in ids and "cities.jsonl:2" in ids  # a row without an id: FILE:LINE
    assert not any("hidden" in i or "png" in i for i in ids)
    by_id = {d.id: d for d in index.documents}
    assert by_id["docs/europe/france.md"].title == "France"  # the first heading
    assert by_id["docs/europe/spain.txt"].title == "spain"   # else the file name
    assert by_id["q1"].url == "https://example.org/rome" and by_id["q1"].title == "Rome"
    assert all(len(d.text.split()) <= 60 for d in index.documents)


async def test_search_ranks_the_passage_that_answers_first(corpus: Path) -> None:
    index = build(corpus)
    assert isinstance(index, SearchSource)
    hits = await index.search("capital of Spain", k=3)
    assert hits[0].id == "docs/europe/spain.txt"
    assert all(isinstance(h, Hit) and h.score and h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    tower = await index.search("When was the Eiffel Tower completed?", k=1)
    assert tower[0].id == "docs/paris.md#8" and "1889" in tower[0].text
    assert (await index.search("Italy", k=5))[0].id == "q1"


async def test_no_match_gives_no_hits(corpus: Path) -> None:
    index = build(corpus)
    assert await index.search("the of and", k=3) == []          # stop words only
    assert await index.search("zeppelin quasar", k=3) == []     # words not in the corpus
    assert len(await index.search("capital", k=100)) == 4       # only passages that match


async def test_a_saved_index_loads_with_the_same_results(corpus: Path, tmp_path: Path) -> None:
    index = build(corpus)
    saved = index.save(tmp_path / "index")
    assert BM25Index.is_saved(saved) and not BM25Index.is_saved(corpus / "docs")
    loaded = BM25Index.load(saved)
    assert loaded.documents == index.documents
    for query in ("capital of Spain", "Eiffel Tower 1889", "Portugal", "valley farms"):
        assert await loaded.search(query, k=4) == await index.search(query, k=4)


async def test_large_indexes_search_off_the_event_loop(corpus: Path) -> None:
    index = build(corpus)
    index.offload_min_docs = 1
    seen: list[str] = []
    real = index.search_sync

    def spy(query: str, k: int = 5) -> list[Hit]:
        seen.append(threading.current_thread().name)
        return real(query, k)

    index.search_sync = spy  # type: ignore[method-assign]
    assert (await index.search("capital of Spain", 1))[0].id == "docs/europe/spain.txt"
    assert seen and seen[0] != threading.main_thread().name


def test_bad_inputs_are_config_errors(tmp_path: Path) -> None:
    pytest.importorskip("bm25s")
    with pytest.raises(ConfigError, match="does not exist"):
        BM25Index.build(tmp_path / "missing")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": "no text"}\n')
    with pytest.raises(ConfigError, match="bad.jsonl line 2 has no text field 'text'"):
        BM25Index.build(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(ConfigError, match="broken.jsonl line 1 is not JSON"):
        BM25Index.build(tmp_path / "broken.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no text found"):
        BM25Index.build(tmp_path / "empty")
    with pytest.raises(ConfigError, match="holds no saved BM25 index"):
        BM25Index.load(tmp_path / "empty")


def test_without_bm25s_the_error_names_the_extra(corpus: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bm25s", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "redline\[tools\]"'):
        build(corpus)


# --- HttpSearch against a loopback server -------------------------------------------

Route = Callable[[str, dict[str, Any]], tuple[int, Any]]


class SearchServer:
    """A loopback HTTP server: `route(method, request)` gives (status, body or str)."""

    def __init__(self, route: Route, delay: float = 0.0) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer("GET", None)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer("POST", json.loads(body))

            def _answer(self, method: str, body: Any) -> None:
                parts = urlsplit(self.path)
                request = {"method": method, "path": parts.path, "body": body,
                           "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                           "headers": dict(self.headers)}
                outer.requests.append(request)
                time.sleep(delay)
                status, payload = route(method, request)
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain" if isinstance(payload, str)
                                     else "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., SearchServer]]:
    servers: list[SearchServer] = []

    def start(route: Route, delay: float = 0.0) -> SearchServer:
        servers.append(SearchServer(route, delay))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


SEARX = {"query": "capital of spain", "number_of_results": 3, "results": [
    {"title": "Spain", "content": "Madrid is the capital of Spain.",
     "url": "https://example.org/spain", "score": 4.5, "engine": "wikipedia"},
    {"title": "Madrid", "content": "Madrid is a city.", "url": "https://example.org/madrid",
     "score": 2.0},
    {"title": "No score", "url": "https://example.org/x"},
]}


async def test_searxng_json(serve) -> None:
    server = serve(lambda method, request: (200, SEARX))
    search = HttpSearch(f"{server.url}/search")
    assert isinstance(search, SearchSource)
    hits = await search.search("capital of spain", k=5)
    assert [h.id for h in hits] == ["https://example.org/spain", "https://example.org/madrid",
                                    "https://example.org/x"]
    assert hits[0] == Hit(id="https://example.org/spain", title="Spain",
                          text="Madrid is the capital of Spain.",
                          url="https://example.org/spain", score=4.5)
    assert hits[2].text == "" and hits[2].score is None
    assert server.requests[0]["query"] == {"q": "capital of spain", "format": "json"}
    assert len(await search.search("capital of spain", k=1)) == 1  # cut to k
    await search.aclose()


async def test_a_custom_api_through_a_field_map(serve) -> None:
    answer = {"data": {"items": [
        {"doc_id": 7, "meta": {"name": "Spain"}, "snippets": ["Madrid is", "the capital."],
         "link": "https://example.org/7", "relevance": 0.9}]}}
    server = serve(lambda method, request: (200, answer))
    search = HttpSearch(f"{server.url}/v2/query", method="POST", params={"lang": "en"},
                        query_param="query", k_param="limit",
                        headers={"Authorization": "Bearer t0ken"},
                        fields=FieldMap(results="data.items", title="meta.name",
                                        text="snippets", url="link", id="doc_id",
                                        score="relevance"))
    hits = await search.search("capital of spain", k=4)
    assert hits == [Hit(id="7", title="Spain", text="Madrid is the capital.",
                        url="https://example.org/7", score=0.9)]
    request = server.requests[0]
    assert request["body"] == {"lang": "en", "query": "capital of spain", "limit": 4}
    assert request["headers"]["Authorization"] == "Bearer t0ken"


async def test_transient_failures_are_retried(serve) -> None:
    statuses = [503, 429]

    def route(method: str, request: dict[str, Any]) -> tuple[int, Any]:
        return (statuses.pop(0), "busy") if statuses else (200, SEARX)

    server = serve(route)
    hits = await HttpSearch(f"{server.url}/search", max_wait=0).search("q", 1)
    assert hits[0].title == "Spain" and len(server.requests) == 3


async def test_a_service_that_stays_down_names_the_url_and_the_failure(serve) -> None:
    server = serve(lambda method, request: (502, "bad gateway"))
    search = HttpSearch(f"{server.url}/search", max_attempts=2, max_wait=0)
    with pytest.raises(FeedbackSourceError) as info:
        await search.search("q")
    assert str(info.value) == (f"search service {server.url}/search failed 2 times; "
                               "last error: HTTP 502: bad gateway")
    assert len(server.requests) == 2


async def test_a_closed_port_is_a_feedback_source_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/search"
    with pytest.raises(FeedbackSourceError, match=r"failed 2 times; last error: connection "
                       r"failed \(.*(refused|failed)") as info:
        await HttpSearch(url, max_attempts=2, max_wait=0).search("q")
    assert url in str(info.value)


async def test_a_slow_service_times_out(serve) -> None:
    server = serve(lambda method, request: (200, SEARX), delay=0.5)
    started = time.monotonic()
    with pytest.raises(FeedbackSourceError, match="no answer within the 0.1 s timeout"):
        await HttpSearch(f"{server.url}/search", timeout=0.1, max_attempts=2,
                         max_wait=0).search("q")
    # Two 0.1 s timeouts, not two 0.5 s answers (a loose bound: machines are noisy).
    assert time.monotonic() - started < 0.95 and len(server.requests) == 2


async def test_answers_that_cannot_be_used(serve) -> None:
    server = serve(lambda method, request: {
        "/bad": (400, "unknown parameter"), "/forbidden": (403, "format not allowed"),
        "/html": (200, "<html>hi</html>"), "/other": (200, {"hits": []}),
    }[request["path"]])
    cases = {"/bad": "rejected the query: HTTP 400: unknown parameter",
             "/forbidden": "add 'json' to search.formats",
             "/html": "answered with something that is not JSON",
             "/other": "without a list of results at 'results'"}
    for path, message in cases.items():
        with pytest.raises(FeedbackSourceError, match=message):
            await HttpSearch(server.url + path, max_wait=0).search("q")
    assert len(server.requests) == 4  # client errors are not retried


def test_one_instance_serves_several_event_loops(serve) -> None:
    server = serve(lambda method, request: (200, SEARX))
    search = HttpSearch(f"{server.url}/search")
    for _ in range(2):  # each refine() runs its own loop
        assert asyncio.run(search.search("q", 1))[0].title == "Spain"


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        HttpSearch("localhost:8888/search")
    with pytest.raises(ConfigError, match="timeout > 0"):
        HttpSearch("http://localhost/search", timeout=0)

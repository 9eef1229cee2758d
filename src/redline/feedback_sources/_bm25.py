"""`BM25Index`: BM25 search over local passages with ``bm25s`` (the ``tools`` extra)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from redline.errors import ConfigError, MissingDependencyError
from redline.feedback_sources._hits import Document, Hit

__all__ = ["BM25Index"]

log = logging.getLogger("redline.feedback_sources")

_TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_MANIFEST = "redline-index.json"
_DOCUMENTS = "documents.jsonl"
_FORMAT = 1


class BM25Index:
    """A BM25 index over local passages, searched in process.

    Build one with `BM25Index.build` (files, folders, JSONL) or
    `BM25Index.from_documents`, keep it with `save` and reopen it with `load`.
    Tokenization is ``bm25s``'s: lower-cased words of two or more characters, English
    stop words removed (``stopwords=None`` keeps them), no stemming.

    Attributes:
        documents: the indexed passages, in index order.
        offload_min_docs: from this many passages on, `search` runs in a worker thread
            so a query does not hold up the event loop. Below it a query takes well
            under a millisecond (about 0.1 ms at 10,000 passages and 0.3 ms at 100,000,
            see bench/README.md), less than handing it to a thread costs.
    """

    offload_min_docs: int = 200_000

    def __init__(self, retriever: Any, documents: Sequence[Document],
                 stopwords: str | list[str] | None) -> None:
        self._retriever = retriever
        self.documents = tuple(documents)
        self.stopwords = stopwords

    def __len__(self) -> int:
        return len(self.documents)

    def __repr__(self) -> str:
        return f"<BM25Index {len(self)} passages>"

    @classmethod
    def from_documents(cls, documents: Iterable[Document], *,
                       stopwords: str | list[str] | None = "en", k1: float = 1.5,
                       b: float = 0.75) -> BM25Index:
        """Index passages as they are (no splitting).

        Raises:
            ConfigError: no documents, or two with the same id.
        """
        bm25s = _bm25s()
        docs = list(documents)
        if not docs:
            raise ConfigError("BM25Index: no documents to index")
        seen: set[str] = set()
        for doc in docs:
            if doc.id in seen:
                raise ConfigError(f"BM25Index: two documents have the id {doc.id!r}")
            seen.add(doc.id)
        tokens = bm25s.tokenize([f"{d.title}\n{d.text}" for d in docs], stopwords=stopwords,
                                return_ids=True, show_progress=False)
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(tokens, show_progress=False)
        return cls(retriever, docs, stopwords)

    @classmethod
    def build(cls, sources: str | Path | Iterable[str | Path], *, passage_words: int = 200,
              text_field: str = "text", title_field: str = "title", id_field: str = "id",
              url_field: str = "url", stopwords: str | list[str] | None = "en",
              k1: float = 1.5, b: float = 0.75) -> BM25Index:
        """Index text files, folders of them (recursively) and JSONL files.

        ``.txt``, ``.md``, ``.markdown``, ``.rst`` files (and any file named directly) are
        split into passages of about `passage_words` words at paragraph breaks; a
        passage's id is the file's path (relative to the folder's parent, or its name)
        with ``#N`` added when the file has several passages, and its title is the
        file's first Markdown heading or else its name. A ``.jsonl`` file holds one
        object per line with the given fields (only the text is required; the id
        defaults to ``FILE:LINE``); long rows are split the same way.

        Raises:
            ConfigError: a path that does not exist, a bad JSONL row, or no text found.
        """
        paths = [sources] if isinstance(sources, str | Path) else list(sources)
        docs: list[Document] = []
        for source in paths:
            docs.extend(_load(Path(source), passage_words, {
                "text": text_field, "title": title_field, "id": id_field, "url": url_field}))
        if not docs:
            raise ConfigError(f"BM25Index: no text found in {[str(p) for p in paths]}")
        return cls.from_documents(docs, stopwords=stopwords, k1=k1, b=b)

    def save(self, directory: str | Path) -> Path:
        """Write the index (``bm25s``'s files, the passages and a manifest) to `directory`."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self._retriever.save(str(path), show_progress=False)
        with (path / _DOCUMENTS).open("w", encoding="utf-8") as out:
            for doc in self.documents:
                out.write(doc.model_dump_json() + "\n")
        (path / _MANIFEST).write_text(json.dumps({
            "format": _FORMAT, "documents": len(self), "stopwords": self.stopwords}),
            encoding="utf-8")
        return path

    @staticmethod
    def is_saved(directory: str | Path) -> bool:
        """Whether `directory` holds an index written by `save`."""
        return (Path(directory) / _MANIFEST).is_file()

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        """Open an index written by `save`.

        Raises:
            ConfigError: the directory holds no saved index, or a damaged one.
        """
        path = Path(directory)
        if not cls.is_saved(path):
            raise ConfigError(f"{str(path)!r} holds no saved BM25 index ({_MANIFEST} missing)")
        bm25s = _bm25s()
        try:
            manifest = json.loads((path / _MANIFEST).read_text(encoding="utf-8"))
            with (path / _DOCUMENTS).open(encoding="utf-8") as lines:
                docs = [Document.model_validate_json(line) for line in lines if line.strip()]
            retriever = bm25s.BM25.load(str(path), show_progress=False, verbosity=0)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the BM25 index in {str(path)!r}: {exc}") from exc
        if manifest.get("format") != _FORMAT or len(docs) != retriever.scores["num_docs"]:
            raise ConfigError(f"the BM25 index in {str(path)!r} is damaged or from another "
                              "version of redline: build it again")
        return cls(retriever, docs, manifest.get("stopwords"))

    def search_sync(self, query: str, k: int = 5) -> list[Hit]:
        """`search`, blocking: up to `k` passages sharing words with `query`, best first."""
        bm25s = _bm25s()
        import numpy as np  # a dependency of bm25s

        tokens = bm25s.tokenize([query], stopwords=self.stopwords, return_ids=False,
                                show_progress=False)[0]
        if not tokens or k < 1:
            return []
        scores = self._retriever.get_scores(tokens)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]  # by score, ties by index order
        return [Hit(**self.documents[i].model_dump(), score=float(scores[i]))
                for i in top if scores[i] > 0]

    async def search(self, query: str, k: int = 5) -> list[Hit]:
        """Up to `k` passages sharing words with `query`, best first."""
        if len(self) >= self.offload_min_docs:
            return await asyncio.to_thread(self.search_sync, query, k)
        return self.search_sync(query, k)


def _bm25s() -> Any:
    try:
        import bm25s  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingDependencyError("BM25 search (bm25s)", "tools") from exc
    return bm25s


def _load(path: Path, passage_words: int, fields: Mapping[str, str]) -> list[Document]:
    if not path.exists():
        raise ConfigError(f"BM25Index: {str(path)!r} does not exist")
    if path.is_file():
        return _load_file(path, path.name, passage_words, fields)
    docs: list[Document] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if file.suffix.lower() in _TEXT_SUFFIXES | {".jsonl"}:
            docs.extend(_load_file(file, (Path(path.name) / rel).as_posix(), passage_words,
                                   fields))
        else:
            log.debug("BM25Index: skipping %s (not a text, Markdown or JSONL file)", file)
    return docs


def _load_file(file: Path, name: str, passage_words: int,
               fields: Mapping[str, str]) -> list[Document]:
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"BM25Index: cannot read {str(file)!r}: {exc.strerror}") from exc
    if file.suffix.lower() == ".jsonl":
        return _load_jsonl(text, name, passage_words, fields)
    heading = _HEADING.search(text)
    title = heading.group(1).strip() if heading else file.stem
    text = re.sub(r"^#{1,6}[ \t]+", "", text, flags=re.MULTILINE)  # keep headings' words
    return _passages(name, title, text, None, passage_words)


def _load_jsonl(text: str, name: str, passage_words: int,
                fields: Mapping[str, str]) -> list[Document]:
    docs: list[Document] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"BM25Index: {name} line {number} is not JSON: {exc.msg}") from exc
        body = row.get(fields["text"]) if isinstance(row, dict) else None
        if not isinstance(body, str):
            raise ConfigError(f"BM25Index: {name} line {number} has no text field "
                              f"{fields['text']!r}")
        doc_id = str(row.get(fields["id"]) or f"{name}:{number}")
        title = str(row.get(fields["title"]) or doc_id)
        url = row.get(fields["url"])
        docs.extend(_passages(doc_id, title, body, str(url) if url else None, passage_words))
    return docs


def _passages(doc_id: str, title: str, text: str, url: str | None,
              passage_words: int) -> list[Document]:
    """Split a text into passages of at most `passage_words` words.

    Passages break between paragraphs once they hold half their words, so short
    paragraphs (a heading) join the next ones and long ones are cut.
    """
    chunks: list[str] = []
    current: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        if current and len(current) + len(words) > passage_words \
                and len(current) >= passage_words // 2:
            chunks.append(" ".join(current))
            current = []
        current.extend(words)
        while len(current) > passage_words:
            chunks.append(" ".join(current[:passage_words]))
            current = current[passage_words:]
    if current:
        chunks.append(" ".join(current))
    if len(chunks) <= 1:
        return [Document(id=doc_id, title=title, text=chunks[0], url=url)] if chunks else []
    return [Document(id=f"{doc_id}#{i}", title=title, text=chunk, url=url)
            for i, chunk in enumerate(chunks, 1)]

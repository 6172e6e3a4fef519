"""Sitemaps (sitemaps.org) read defensively: no DTDs, no entities, bounded size and count.

A sitemap comes from a server warmupd does not control, so the parser is expat with every door
shut: a DOCTYPE (where billion-laughs entities and XXE external references live) is refused the
moment it starts, before any declaration inside it is read; an entity reference without a DTD is
not well-formed XML; nothing is ever fetched or read from disk on the document's behalf. gzip is
inflated in bounded steps, so a gzip bomb stops at the size cap instead of filling memory.
The functions here are pure (bytes in, URLs out); fetching lives in :mod:`warmupd.jobs.kinds.http`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from xml.parsers import expat

from warmupd.errors import JobError

MAX_BYTES = 50 * 1024 * 1024
"""The sitemaps.org limit on a sitemap file after decompression."""
MAX_URLS = 50_000
"""The sitemaps.org limit on the URLs (or child sitemaps) of one file."""
MAX_DEPTH = 3
"""The configured sitemap is level 1; an index's children level 2, theirs level 3."""
CHUNK_BYTES = 64 * 1024
"""Inflate and parse in pieces this size, so the caller can yield to the loop in between."""

_GZIP_MAGIC = b"\x1f\x8b"


class SitemapError(JobError):
    """A sitemap was refused or could not be read; the message names the sitemap."""


def is_gzip(data: bytes) -> bool:
    """Whether ``data`` starts like a gzip stream."""
    return data[:2] == _GZIP_MAGIC


def gunzip_chunks(data: bytes, *, max_bytes: int = MAX_BYTES) -> Iterator[bytes]:
    """Inflate gzip ``data`` (one or more members) in pieces of at most :data:`CHUNK_BYTES`.

    :raises SitemapError: more than ``max_bytes`` come out, or the stream is corrupt.
    """
    total = 0
    pending = data
    while pending:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        while pending and not inflater.eof:
            try:
                out = inflater.decompress(pending, CHUNK_BYTES)
            except zlib.error as exc:
                raise SitemapError(f"corrupt gzip data ({exc})") from None
            pending = inflater.unconsumed_tail
            total += len(out)
            if total > max_bytes:
                raise SitemapError(f"larger than {max_bytes} bytes after decompression")
            if out:
                yield out
            elif not pending:
                break
        if not inflater.eof:
            raise SitemapError("truncated gzip data")
        # Concatenated gzip members are one file (RFC 1952 §2.2); anything else after it is not.
        pending = inflater.unused_data
        if pending and not is_gzip(pending):
            raise SitemapError("trailing data after the gzip stream")


@dataclass
class Sitemap:
    """What one sitemap file lists: page URLs (``urlset``) or child sitemaps (``sitemapindex``)."""

    kind: str = ""
    locs: list[str] = field(default_factory=list)


class SitemapParser:
    """An incremental, hardened sitemap parser: :meth:`feed` pieces, then :meth:`close`."""

    def __init__(self, *, max_urls: int = MAX_URLS) -> None:
        self.result = Sitemap()
        self._max_urls = max_urls
        self._path: list[str] = []
        self._text: list[str] | None = None
        parser = expat.ParserCreate(namespace_separator=" ")
        # Never read a DTD or an external entity, whatever the document says.
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._refuse_doctype
        parser.EntityDeclHandler = self._refuse_entity
        parser.UnparsedEntityDeclHandler = self._refuse_entity
        parser.ExternalEntityRefHandler = self._refuse_external
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._data
        self._parser = parser

    def feed(self, data: bytes) -> None:
        """Parse the next piece.

        :raises SitemapError: a DTD or entity, not well-formed XML, not a sitemap, too many URLs.
        """
        self._parse(data, final=False)

    def close(self) -> Sitemap:
        """Finish the document and return what it lists."""
        self._parse(b"", final=True)
        if not self.result.kind:
            raise SitemapError("not a sitemap (empty document)")
        return self.result

    def _parse(self, data: bytes, *, final: bool) -> None:
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError as exc:
            raise SitemapError(f"not well-formed XML ({exc})") from None

    def _refuse_doctype(self, *_: object) -> None:
        raise SitemapError(
            "refused: the document has a DOCTYPE (DTDs, entities and external references are "
            "not accepted in a sitemap)"
        )

    def _refuse_entity(self, *_: object) -> None:
        raise SitemapError("refused: the document declares an entity")

    def _refuse_external(self, *_: object) -> int:
        raise SitemapError("refused: the document refers to an external entity")

    def _start(self, name: str, _attrs: dict[str, str]) -> None:
        local = name.rsplit(" ", 1)[-1]
        depth = len(self._path)
        self._path.append(local)
        if depth == 0:
            if local not in ("urlset", "sitemapindex"):
                raise SitemapError(f"not a sitemap (root element <{local}>)")
            self.result.kind = local
        elif depth == 2 and local == "loc" and self._path[1] in ("url", "sitemap"):
            self._text = []

    def _data(self, text: str) -> None:
        if self._text is not None:
            self._text.append(text)

    def _end(self, _name: str) -> None:
        self._path.pop()
        if self._text is None:
            return
        loc = "".join(self._text).strip()
        self._text = None
        if loc:
            if len(self.result.locs) >= self._max_urls:
                raise SitemapError(f"more than {self._max_urls} entries in one file")
            self.result.locs.append(loc)

"""The hardened sitemap reader on its own: bytes in, URLs out, every refusal named."""

from __future__ import annotations

import gzip
import re

import pytest

from tests.site_fakes import sitemapindex, urlset
from warmupd.jobs.kinds.sitemap import SitemapError, SitemapParser, gunzip_chunks, is_gzip


def parse(data: bytes, **kw: int) -> tuple[str, list[str]]:
    parser = SitemapParser(**kw)
    for i in range(0, len(data), 7):  # byte by byte-ish: the parser is incremental
        parser.feed(data[i : i + 7])
    result = parser.close()
    return result.kind, result.locs


def test_urlset_and_index_with_namespaces_whitespace_and_escapes() -> None:
    doc = urlset([" https://a.example/x ", "https://a.example/y?a=1&amp;b=2", ""])
    assert parse(doc) == ("urlset", ["https://a.example/x", "https://a.example/y?a=1&b=2"])
    assert parse(sitemapindex(["https://a.example/s.xml"])) == (
        "sitemapindex",
        ["https://a.example/s.xml"],
    )
    # A <loc> that is not where sitemaps.org puts it is not a URL to warm.
    assert parse(
        b"<urlset><loc>https://x/</loc><url><image><loc>https://i/</loc></image></url></urlset>"
    ) == ("urlset", [])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not well-formed XML"),
        (b"<html><body/></html>", "not a sitemap (root element <html>)"),
        (b"<urlset><url><loc>x</url></urlset>", "not well-formed XML"),
        (b"<urlset><url><loc>&ext;</loc></url></urlset>", "undefined entity"),
        (
            b'<?xml version="1.0"?><!DOCTYPE urlset SYSTEM "http://127.0.0.1:9/dtd"><urlset/>',
            "DOCTYPE",
        ),
    ],
)
def test_refusals_are_named(data: bytes, message: str) -> None:
    with pytest.raises(SitemapError, match=re.escape(message)):
        parse(data)


def test_at_most_the_given_number_of_entries_per_file() -> None:
    assert len(parse(urlset([f"https://a/{n}" for n in range(3)]), max_urls=3)[1]) == 3
    with pytest.raises(SitemapError, match="more than 3 entries in one file"):
        parse(urlset([f"https://a/{n}" for n in range(4)]), max_urls=3)


def test_gunzip_reads_members_and_refuses_corrupt_truncated_or_trailing_data() -> None:
    data = gzip.compress(b"abc") + gzip.compress(b"def")
    assert is_gzip(data)
    assert not is_gzip(b"<urlset/>")
    assert b"".join(gunzip_chunks(data)) == b"abcdef"
    assert b"".join(gunzip_chunks(gzip.compress(b""))) == b""
    with pytest.raises(SitemapError, match="corrupt gzip data"):
        list(gunzip_chunks(b"\x1f\x8b" + b"\x00" * 30))
    with pytest.raises(SitemapError, match="truncated gzip data"):
        list(gunzip_chunks(gzip.compress(b"x" * 1000)[:-12]))
    with pytest.raises(SitemapError, match="trailing data after the gzip stream"):
        list(gunzip_chunks(gzip.compress(b"abc") + b"junk"))
    with pytest.raises(SitemapError, match="larger than 100 bytes after decompression"):
        list(gunzip_chunks(gzip.compress(b"y" * 101), max_bytes=100))

"""Where a backfill's keys come from (`edge.admin.keylists`): keys files and sitemaps."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from edge.admin.keylists import KeyListError, key_of_url, read_keys_file, sitemap_keys

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(*locs: str) -> str:
    entries = "".join(f"<url><loc>{loc}</loc><lastmod>2026-01-01</lastmod></url>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{entries}</urlset>'


def index(*locs: str) -> str:
    entries = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f"<sitemapindex {NS}>{entries}</sitemapindex>"


def test_keys_file_skips_comments_and_blanks_and_keeps_order(tmp_path: Path) -> None:
    """One key a line, `#` lines and blank lines ignored, surrounding blanks trimmed,
    a repeated key kept once in its first place."""
    path = tmp_path / "keys.txt"
    path.write_text("# header\n\nimg/a.png\n  css/b.css  \n# more\nimg/a.png\nc d.txt\n")
    assert read_keys_file(str(path)) == ["img/a.png", "css/b.css", "c d.txt"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [("/img/a.png", "keys have no leading '/'"), ("a/../b", "key has a '..' segment")],
)
def test_keys_file_refuses_a_bad_key_naming_its_line(tmp_path: Path, line, reason) -> None:
    """A key with a leading `/` or one no store could hold stops the command, with the
    file and line number, before anything is sent."""
    path = tmp_path / "keys.txt"
    path.write_text(f"ok.txt\n{line}\n")
    with pytest.raises(KeyListError, match=f":2: {reason}"):
        read_keys_file(str(path))


def test_an_empty_keys_file_is_refused(tmp_path: Path) -> None:
    """A file with only comments would start a job of nothing: refused."""
    path = tmp_path / "keys.txt"
    path.write_text("# nothing\n")
    with pytest.raises(KeyListError, match="no keys"):
        read_keys_file(str(path))


def test_page_urls_become_keys() -> None:
    """A URL's path, percent-decoded, without its leading `/`; host and query dropped;
    the site root and folder pages name no key."""
    assert key_of_url("https://example.com/docs/a%20b.html?x=1#top") == "docs/a b.html"
    assert key_of_url("https://example.com/%E4%B8%AD.png") == "中.png"
    assert key_of_url("https://example.com/") is None
    assert key_of_url("https://example.com/blog/") is None
    assert key_of_url("https://example.com/a/%2E%2E/b") is None


def test_plain_sitemap_file(tmp_path: Path) -> None:
    """A plain urlset file gives its pages' keys in order; what names no key is counted."""
    path = tmp_path / "sitemap.xml"
    path.write_text(urlset("http://s.example/a.html", "http://s.example/", "http://s.example/b"))
    found = sitemap_keys(str(path))
    assert found.keys == ["a.html", "b"]
    assert found.left_out == ["http://s.example/"] and found.sitemaps == 1


def test_gzipped_sitemap_is_known_by_its_magic_bytes(tmp_path: Path) -> None:
    """A gzipped sitemap is read whatever its name says."""
    path = tmp_path / "sitemap.xml"  # no .gz: the bytes decide
    path.write_bytes(gzip.compress(urlset("http://s.example/z.js").encode()))
    assert sitemap_keys(str(path)).keys == ["z.js"]


def test_index_files_are_followed_relative_to_the_index_and_by_url(tmp_path: Path) -> None:
    """An index names local sitemaps relative to its own folder (one gzipped, one in an
    index of its own) and URLs, fetched through the injected fetcher; keys repeated
    across sitemaps come once, and an index naming itself is not read twice."""
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "one.xml.gz").write_bytes(
        gzip.compress(urlset("http://s.example/1", "http://s.example/2").encode())
    )
    (tmp_path / "maps" / "inner.xml").write_text(index("two.xml"))
    (tmp_path / "maps" / "two.xml").write_text(urlset("http://s.example/2", "http://s.example/3"))
    top = tmp_path / "index.xml"
    top.write_text(
        index("maps/one.xml.gz", "maps/inner.xml", "https://s.example/remote.xml", str(top))
    )
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return urlset("http://s.example/4").encode()

    found = sitemap_keys(str(top), fetch)
    assert found.keys == ["1", "2", "3", "4"]
    assert fetched == ["https://s.example/remote.xml"] and found.sitemaps == 5


def test_url_index_resolves_relative_locations_against_its_url() -> None:
    """A relative `<loc>` in an index fetched by URL is joined with that URL."""
    pages = {
        "https://s.example/sitemaps/index.xml": index("part.xml").encode(),
        "https://s.example/sitemaps/part.xml": urlset("https://s.example/p").encode(),
    }
    assert sitemap_keys("https://s.example/sitemaps/index.xml", pages.__getitem__).keys == ["p"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
            f"<urlset {NS}><url><loc>&b;</loc></url></urlset>",
            "refused XML",
        ),
        ("<urlset", "not well-formed XML"),
        ("<html><body/></html>", "not a sitemap"),
        (f"<urlset {NS}></urlset>", "no keys in the sitemap"),
    ],
)
def test_bad_sitemaps_are_refused(tmp_path: Path, content: str, match: str) -> None:
    """Entity tricks (defusedxml), broken XML, another document, an empty sitemap: each
    a clear refusal naming the file."""
    path = tmp_path / "bad.xml"
    path.write_text(content)
    with pytest.raises(KeyListError, match=match):
        sitemap_keys(str(path))

"""Where a backfill's keys come from, read on the operator's side: a keys file or a sitemap.

A keys file has one key a line, as stored (no leading `/`), with `#` comment lines and
blank lines ignored. A sitemap (sitemaps.org 0.9) is read here rather than by the edge, so
the edge never fetches a URL that did not pass its origin vetting: only the keys travel.
A sitemap may be plain or gzipped (known by its magic bytes, whatever its name) and may be
an index of other sitemaps, which are followed: a `<loc>` that is an http(s) URL is
fetched, anything else is a file relative to the index. Each page's key is its URL's path,
percent-decoded, without the leading `/` (the host and query are not part of a key; a
path ending in `/` names a folder page, which cannot be stored beside its folder's keys,
and is left out). XML is parsed with defusedxml: a sitemap from the web is untrusted.
"""

from __future__ import annotations

import gzip
import io
import os
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET

from edge.store.keys import InvalidKey, validate_key

MAX_SITEMAP_BYTES = 256 * 1024 * 1024  # after decompression (the protocol's limit is 50 MB)
MAX_INDEX_DEPTH = 4
GZIP_MAGIC = b"\x1f\x8b"


class KeyListError(Exception):
    """A keys file or sitemap that cannot be used; the message names where and why."""


def read_keys_file(path: str) -> list[str]:
    """The keys of a keys file, in order, duplicates kept once; a bad key names its line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise KeyListError(f"{path}: cannot read it ({e})") from None
    keys: dict[str, None] = {}
    for number, line in enumerate(lines, 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if key.startswith("/"):
            raise KeyListError(f"{path}:{number}: keys have no leading '/' ({key!r})")
        try:
            validate_key(key)
        except InvalidKey as e:
            raise KeyListError(f"{path}:{number}: {e}") from None
        keys[key] = None
    if not keys:
        raise KeyListError(f"{path}: no keys in it")
    return list(keys)


def fetch_url(url: str) -> bytes:
    """GET a sitemap over HTTP(S), at most `MAX_SITEMAP_BYTES`."""
    request = urllib.request.Request(url, headers={"user-agent": "cosedge-admin"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data: bytes = response.read(MAX_SITEMAP_BYTES + 1)
    except OSError as e:
        raise KeyListError(f"{url}: cannot fetch it ({e})") from None
    if len(data) > MAX_SITEMAP_BYTES:
        raise KeyListError(f"{url}: larger than {MAX_SITEMAP_BYTES} bytes")
    return data


@dataclass
class SitemapKeys:
    """What a sitemap (and the sitemaps it indexes) gave: keys, and what was left out."""

    keys: list[str] = field(default_factory=list)
    sitemaps: int = 0
    left_out: list[str] = field(default_factory=list)  # URLs that name no storable key


def is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https")


def sitemap_keys(source: str, fetch: Callable[[str], bytes] = fetch_url) -> SitemapKeys:
    """Every key of the sitemap at `source` (a file or an http(s) URL), indexes followed."""
    found = SitemapKeys()
    seen: dict[str, None] = {}
    _read(source, fetch, found, seen, set(), 0)
    found.keys = list(seen)
    if not found.keys:
        raise KeyListError(f"{source}: no keys in the sitemap")
    return found


def _read(
    source: str,
    fetch: Callable[[str], bytes],
    found: SitemapKeys,
    keys: dict[str, None],
    visited: set[str],
    depth: int,
) -> None:
    if source in visited:
        return
    visited.add(source)
    root = _parse(source, _load(source, fetch))
    found.sitemaps += 1
    kind = _local(root.tag)
    if kind == "urlset":
        for loc in _locs(root, "url"):
            key = key_of_url(loc)
            if key is None:
                found.left_out.append(loc)
            else:
                keys[key] = None
    elif kind == "sitemapindex":
        if depth >= MAX_INDEX_DEPTH:
            raise KeyListError(f"{source}: sitemap indexes nested deeper than {MAX_INDEX_DEPTH}")
        for loc in _locs(root, "sitemap"):
            _read(_beside(source, loc), fetch, found, keys, visited, depth + 1)
    else:
        raise KeyListError(f"{source}: not a sitemap (<{kind}>, not <urlset> or <sitemapindex>)")


def _load(source: str, fetch: Callable[[str], bytes]) -> bytes:
    if is_url(source):
        data = fetch(source)
    else:
        try:
            with open(source, "rb") as f:
                data = f.read(MAX_SITEMAP_BYTES + 1)
        except OSError as e:
            raise KeyListError(f"{source}: cannot read it ({e.strerror or e})") from None
    if data[:2] == GZIP_MAGIC:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as unzipped:
                data = unzipped.read(MAX_SITEMAP_BYTES + 1)
        except (OSError, EOFError) as e:
            raise KeyListError(f"{source}: bad gzip data ({e})") from None
    if len(data) > MAX_SITEMAP_BYTES:
        raise KeyListError(f"{source}: larger than {MAX_SITEMAP_BYTES} bytes")
    return data


def _parse(source: str, data: bytes) -> Element:
    try:
        root: Element = SafeET.fromstring(data)
    except SafeET.ParseError as e:
        raise KeyListError(f"{source}: not well-formed XML ({e})") from None
    except ValueError as e:  # defusedxml's refusals: entities, external references
        raise KeyListError(f"{source}: refused XML ({type(e).__name__})") from None
    return root


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _locs(root: Element, entry: str) -> list[str]:
    locs = []
    for child in root:
        if _local(child.tag) != entry:
            continue
        for part in child:
            if _local(part.tag) == "loc" and part.text and part.text.strip():
                locs.append(part.text.strip())
    return locs


def _beside(index: str, loc: str) -> str:
    """Where an index's `<loc>` points: a URL as it is (relative to a URL index), else a
    file relative to the index's folder."""
    if is_url(loc):
        return loc
    if is_url(index):
        return urllib.parse.urljoin(index, loc)
    return os.path.join(os.path.dirname(os.path.abspath(index)), loc)


def key_of_url(loc: str) -> str | None:
    """The key a page URL names: its path, percent-decoded, without the leading `/`;
    None when it names no storable key (the site root, a folder page, an invalid key)."""
    path = urllib.parse.urlsplit(loc).path
    key = urllib.parse.unquote(path).lstrip("/")
    if not key or key.endswith("/"):
        return None
    try:
        validate_key(key)
    except InvalidKey:
        return None
    return key

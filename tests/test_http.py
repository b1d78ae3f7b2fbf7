"""Byte ranges and preconditions (RFC 9110) as pure functions."""

from __future__ import annotations

import pytest

from edge.web.http import (
    RangeResult,
    http_date,
    if_range_allows,
    parse_range,
    precondition_status,
)

U = RangeResult.UNSATISFIABLE


@pytest.mark.parametrize(
    "header, size, expected",
    [
        (None, 100, None),
        (b"bytes=0-9", 100, (0, 9)),
        (b"bytes=90-", 100, (90, 99)),
        (b"bytes=90-1000", 100, (90, 99)),
        (b"bytes=-10", 100, (90, 99)),
        (b"bytes=-1000", 100, (0, 99)),
        (b"bytes=99-99", 100, (99, 99)),
        (b"Bytes = 1-2", 100, (1, 2)),
        (b"bytes=100-", 100, U),
        (b"bytes=100-200", 100, U),
        (b"bytes=-0", 100, U),
        (b"bytes=0-0", 0, U),
        (b"bytes=-5", 0, U),
        (b"bytes=5-1", 100, None),
        (b"bytes=0-1,3-4", 100, None),
        (b"items=0-1", 100, None),
        (b"bytes=a-b", 100, None),
        (b"bytes=-", 100, None),
        (b"bytes=1", 100, None),
        (b"bytes=\xff", 100, None),
    ],
)
def test_parse_range(header, size, expected):
    """Single ranges resolve to inclusive bounds; bad syntax is ignored; misses are 416."""
    assert parse_range(header, size) == expected


ETAG = b'"abc"'
MTIME = 1_700_000_000.5


def _status(**headers):
    base = dict(if_match=None, if_none_match=None, if_modified_since=None, if_unmodified_since=None)
    base.update(headers)
    return precondition_status(etag=ETAG, mtime=MTIME, **base)


def test_preconditions():
    """RFC 9110 §13.2.2 order: If-Match, If-Unmodified-Since, If-None-Match,
    If-Modified-Since."""
    assert _status() is None
    assert _status(if_none_match=b'"abc"') == 304
    assert _status(if_none_match=b'W/"abc"') == 304
    assert _status(if_none_match=b'"x", "abc"') == 304
    assert _status(if_none_match=b"*") == 304
    assert _status(if_none_match=b'"x"') is None
    assert _status(if_modified_since=http_date(MTIME)) == 304
    assert _status(if_modified_since=http_date(MTIME - 10)) is None
    assert _status(if_modified_since=b"garbage") is None
    # If-None-Match wins over If-Modified-Since
    assert _status(if_none_match=b'"x"', if_modified_since=http_date(MTIME)) is None
    assert _status(if_match=b'"x"') == 412
    assert _status(if_match=b'W/"abc"') == 412
    assert _status(if_match=b'"abc"') is None
    assert _status(if_unmodified_since=http_date(MTIME - 10)) == 412
    assert _status(if_unmodified_since=http_date(MTIME)) is None


def test_if_range():
    """If-Range applies the Range only while the validator still matches."""
    assert if_range_allows(None, ETAG, MTIME)
    assert if_range_allows(b'"abc"', ETAG, MTIME)
    assert not if_range_allows(b'"old"', ETAG, MTIME)
    assert if_range_allows(http_date(MTIME), ETAG, MTIME)
    assert not if_range_allows(http_date(MTIME - 5), ETAG, MTIME)

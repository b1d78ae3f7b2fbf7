"""HTTP dates are UTC whatever the server's time zone: the three RFC 9110 forms of one
instant give one timestamp, also under TZ=Asia/Shanghai."""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator

import pytest

from edge.web.http import _parse_date, precondition_status

INSTANT = calendar.timegm((1994, 11, 6, 8, 49, 37))
FORMS = [
    b"Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
    b"Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
    b"Sun Nov  6 08:49:37 1994",  # asctime
    b"Sun, 06 Nov 1994 08:49:37 -0000",  # RFC 5322 "unknown zone", also UTC
]


@pytest.fixture
def shanghai() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Shanghai"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.parametrize("value", FORMS)
def test_every_form_is_utc_in_any_zone(shanghai, value):
    """Under UTC+8, each form parses to the same UTC instant (not 28,800 s off)."""
    assert time.timezone == -8 * 3600  # the zone really is in effect
    assert _parse_date(value) == INSTANT


@pytest.mark.parametrize("value", FORMS)
def test_if_modified_since_in_each_form(shanghai, value):
    """An object modified at that instant is 304 for each form, and 200 a second later."""
    common = dict(etag=b'"e"', if_match=None, if_none_match=None, if_unmodified_since=None)
    assert precondition_status(mtime=INSTANT, if_modified_since=value, **common) == 304
    assert precondition_status(mtime=INSTANT + 1, if_modified_since=value, **common) is None

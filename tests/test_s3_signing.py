"""edge.s3.signing: the signer's caches give exactly what botocore alone gives.

botocore's clock is fixed here (its `get_current_datetime`, which `add_auth` reads) and the
signer's own clock with it, so a date change can be stepped over; every expectation is
computed by a fresh, uncached botocore `S3SigV4Auth` at the same instant.
"""

from __future__ import annotations

import datetime
from typing import Any

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from edge.s3.signing import EMPTY_SHA256, Signer

KEY, SECRET, REGION = "AKID", "secret-0123456789", "us-east-1"
URL = "http://127.0.0.1:8333/bucket/some%20key"


class Clock:
    """One instant for botocore and the signer both."""

    def __init__(self, when: datetime.datetime) -> None:
        self.when = when

    def botocore(self, remove_tzinfo: bool = True) -> datetime.datetime:
        return self.when

    def seconds(self) -> float:
        return self.when.replace(tzinfo=datetime.UTC).timestamp()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fixed = Clock(datetime.datetime(2026, 3, 1, 23, 59, 59))
    monkeypatch.setattr(botocore.auth, "get_current_datetime", fixed.botocore)
    return fixed


def botocore_alone(method: str, url: str, headers: dict[str, str], sha: str) -> dict[str, str]:
    """The headers a plain botocore signer gives, nothing remembered."""

    class Preset(S3SigV4Auth):  # type: ignore[misc]
        def payload(self, request: Any) -> str:
            return sha

    request = AWSRequest(method=method, url=url, headers=dict(headers))
    Preset(Credentials(KEY, SECRET), "s3", REGION).add_auth(request)
    return {str(name): str(value) for name, value in request.headers.items()}


def test_signing_key_follows_the_date(clock: Clock) -> None:
    """The derived signing key is remembered, yet a request signed after midnight carries
    the new day's scope and the signature botocore alone computes for it, not one made
    with the previous day's key."""
    signer = Signer(KEY, SECRET, REGION, clock=clock.seconds)
    before = signer.sign("GET", URL, {}, EMPTY_SHA256)
    assert before == botocore_alone("GET", URL, {}, EMPTY_SHA256)
    assert "/20260301/" in before["Authorization"]
    other = signer.sign("GET", URL + "2", {}, EMPTY_SHA256)  # same day: key from the cache
    assert other == botocore_alone("GET", URL + "2", {}, EMPTY_SHA256)

    clock.when = datetime.datetime(2026, 3, 2, 0, 0, 1)
    after = signer.sign("GET", URL, {}, EMPTY_SHA256)
    assert after == botocore_alone("GET", URL, {}, EMPTY_SHA256)
    assert "/20260302/" in after["Authorization"]
    assert after["Authorization"] != before["Authorization"]


def test_same_request_in_the_same_second_reuses_its_signature(clock: Clock) -> None:
    """Within one second the same request gets the headers signed for it the first time
    (equal to botocore's); a change of second, header or payload signs anew, and changing
    a returned dict never changes what the next request is sent with."""
    signer = Signer(KEY, SECRET, REGION, clock=clock.seconds)
    first = signer.sign("GET", URL, {"Range": "bytes=0-9"}, EMPTY_SHA256)
    first["Authorization"] = "spoiled"
    again = signer.sign("GET", URL, {"Range": "bytes=0-9"}, EMPTY_SHA256)
    assert again == botocore_alone("GET", URL, {"Range": "bytes=0-9"}, EMPTY_SHA256)

    ranged = signer.sign("GET", URL, {"Range": "bytes=10-19"}, EMPTY_SHA256)
    assert ranged["Authorization"] != again["Authorization"]
    put = signer.sign("PUT", URL, {}, "ab" * 32)
    assert put == botocore_alone("PUT", URL, {}, "ab" * 32)

    clock.when += datetime.timedelta(seconds=1)
    later = signer.sign("GET", URL, {"Range": "bytes=0-9"}, EMPTY_SHA256)
    assert later == botocore_alone("GET", URL, {"Range": "bytes=0-9"}, EMPTY_SHA256)
    assert later["X-Amz-Date"] != again["X-Amz-Date"]


def test_reuse_is_bounded(clock: Clock) -> None:
    """A second with more distinct requests than the reuse limit still signs each one
    correctly; only the first `REUSE_LIMIT` are kept."""
    signer = Signer(KEY, SECRET, REGION, clock=clock.seconds)
    signer.REUSE_LIMIT = 3
    for n in range(6):
        url = f"{URL}-{n}"
        assert signer.sign("GET", url, {}, EMPTY_SHA256) == botocore_alone(
            "GET", url, {}, EMPTY_SHA256
        )
    assert len(signer._signed) == 3

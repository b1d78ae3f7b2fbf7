"""The origin digest check (edge.origin.digest): what each header promises, and when a body
is refused; the provenance a copy records with it (edge.origin.provenance, the folder
store's record) and the `origin_fetch.check_digests` switch."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest_twisted
from twisted.web.http_headers import Headers

from edge.origin.digest import DigestCheck, parse_digests
from edge.origin.provenance import Received, Revalidation, revalidate
from edge.store.folder.store import FolderStore
from edge.store.interface import ObjectMeta, OriginProvenance
from tests.configs import load_text, refusal

BODY = b"the origin's bytes\n" * 100
MD5 = hashlib.md5(BODY).digest()
SHA = hashlib.sha256(BODY).digest()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def check(headers: dict[str, str], body: bytes = BODY) -> str | None:
    """Stream `body` through the check as a fetch does, in chunks; the mismatch reason."""
    digests = DigestCheck.of(Headers({k.encode(): [v.encode()] for k, v in headers.items()}))
    written: list[bytes] = []
    sink = digests.sink(written.append)
    for at in range(0, len(body), 7):
        sink(body[at : at + 7])
    assert b"".join(written) == body
    return digests.mismatch(hashlib.md5(body).digest())


def test_matching_digests_of_every_header_pass():
    """Content-MD5, Digest (md5 and sha-256), Repr-Digest and Content-Digest that match
    the body let it through."""
    assert check({"Content-MD5": b64(MD5)}) is None
    assert check({"Digest": f"md5={b64(MD5)}, SHA-256={b64(SHA)}"}) is None
    assert check({"Repr-Digest": f"sha-256=:{b64(SHA)}:, md5=:{b64(MD5)}:"}) is None
    assert check({"Content-Digest": f"sha-256=:{b64(SHA)}:"}) is None


def test_hex_digests_some_servers_send_are_accepted():
    """A hex MD5 in Content-MD5 and a hex sha-256 in Digest are understood, and checked."""
    assert check({"Content-MD5": MD5.hex()}) is None
    assert check({"Digest": f"sha-256={SHA.hex()}"}) is None
    assert check({"Content-MD5": hashlib.md5(b"x").hexdigest()}) is not None


def test_a_wrong_digest_names_the_header_and_the_algorithm():
    """A body that hashes otherwise is refused, and the reason says which header and
    which algorithm disagreed."""
    other_md5 = hashlib.md5(b"other").digest()
    other_sha = hashlib.sha256(b"other").digest()
    reason = check({"Content-MD5": b64(other_md5)})
    assert reason is not None and reason.startswith("Content-MD5 md5 mismatch")
    assert b64(other_md5) in reason and b64(MD5) in reason
    reason = check({"Digest": f"md5={b64(MD5)}, sha-256={b64(other_sha)}"})
    assert reason is not None and reason.startswith("Digest sha-256 mismatch")
    reason = check({"Repr-Digest": f"sha-256=:{b64(other_sha)}:"})
    assert reason is not None and reason.startswith("Repr-Digest sha-256 mismatch")


def test_one_changed_byte_fails_the_sha256():
    """The SHA-256 is of the streamed bytes themselves: one byte changed fails it."""
    damaged = BODY[:50] + b"X" + BODY[51:]
    assert check({"Digest": f"sha-256={b64(SHA)}"}, damaged) is not None


def test_unknown_algorithms_are_ignored():
    """sha-512, crc32c, unixsum ... are neither checked nor a failure, alone or beside
    a known one (which is still checked)."""
    assert check({"Digest": "unixsum=30637, crc32c=abcd"}) is None
    assert check({"Repr-Digest": "sha-512=:AAAA:"}) is None
    assert check({"Digest": f"sha-512=AAAA, md5={b64(MD5)}"}) is None
    assert check({"Digest": f"sha-512=AAAA, md5={b64(b'0' * 16)}"}) is not None
    assert parse_digests(Headers({b"digest": [b"sha-512=AAAA"]})) == []


def test_malformed_values_of_known_algorithms_store_nothing():
    """A Content-MD5 that is not base64 (or not 16 bytes), and a Repr-Digest written
    without its colons, cannot be checked, so the copy fails with the header named."""
    reason = check({"Content-MD5": "not base64!"})
    assert reason is not None and "Content-MD5 md5 value" in reason and "malformed" in reason
    assert check({"Content-MD5": b64(b"short")}) is not None
    reason = check({"Repr-Digest": f"sha-256={b64(SHA)}"})
    assert reason is not None and reason.startswith("Repr-Digest sha-256 value")


def test_members_that_are_not_algorithm_value_pairs_are_skipped():
    """Garbage between commas is not a digest: it neither fails nor hides a real one."""
    assert check({"Digest": "garbage, , ==="}) is None
    assert check({"Digest": f"garbage, md5={b64(b'0' * 16)}"}) is not None


def test_switched_off_nothing_is_checked():
    """`origin_fetch.check_digests: false`: a wrong Content-MD5 is not looked at."""
    headers = Headers({b"content-md5": [b64(b"0" * 16).encode()]})
    digests = DigestCheck.of(headers, enabled=False)
    assert digests.mismatch(MD5) is None


def test_no_sha256_means_no_second_hash():
    """Without a SHA-256 to check, the body is written straight to the store's writer
    (MD5 is the store's own), so a copy pays for no extra hashing."""
    write = [].append
    assert DigestCheck.of(Headers({b"content-md5": [b64(MD5).encode()]})).sink(write) is write


def test_received_keeps_safe_origin_headers_only():
    """A copy's metadata carries the origin's ETag, Last-Modified and Content-Type; a
    value HTTP could not send back unchanged is left out."""
    headers = Headers(
        {
            b"etag": [b'"abc"'],
            b"last-modified": [b"Tue, 01 Dec 2026 10:00:00 GMT"],
            b"content-type": ["text/plain; charset=\xe9".encode("latin-1")],
        }
    )
    meta = Received(headers).meta
    assert meta.origin is not None
    assert meta.origin.etag == '"abc"'
    assert meta.origin.last_modified == "Tue, 01 Dec 2026 10:00:00 GMT"
    assert meta.origin.content_type == "" and meta.content_type == ""
    meta = Received(Headers({b"content-type": [b"image/webp"]})).meta
    assert meta.content_type == "image/webp"


def test_revalidation_headers():
    """A refresh asks with If-None-Match / If-Modified-Since from the record; a plain copy
    (no revalidation) adds nothing."""
    headers = Headers()
    revalidate(headers, None)
    assert list(headers.getAllRawHeaders()) == []
    revalidate(headers, Revalidation('"v1"', "Tue, 01 Dec 2026 10:00:00 GMT"))
    assert headers.getRawHeaders(b"if-none-match") == [b'"v1"']
    assert headers.getRawHeaders(b"if-modified-since") == [b"Tue, 01 Dec 2026 10:00:00 GMT"]


def test_check_digests_config(tmp_path):
    """`origin_fetch.check_digests` is on by default, takes true/false, and refuses
    anything else naming the key."""
    assert load_text(tmp_path, "buckets: {}\n").origin_fetch.check_digests is True
    config = load_text(tmp_path, "origin_fetch: {check_digests: false}\n")
    assert config.origin_fetch.check_digests is False
    error = refusal(tmp_path, "origin_fetch: {check_digests: 'no'}\n")
    assert "origin_fetch.check_digests" in str(error) and "true or false" in str(error)


@pytest_twisted.ensureDeferred
async def test_folder_records_keep_provenance_and_ignore_a_hand_edited_one(tmp_path):
    """The folder store's metadata record carries `origin` both ways; a record whose
    `origin` is not strings (edited by hand) reads as no provenance, not a crash."""
    store = FolderStore(tmp_path, ["b-1250000000"])
    store.prepare()
    pending = store.new_upload("b-1250000000", "k")
    pending.write(b"bytes")
    origin = OriginProvenance('"e"', "Tue, 01 Dec 2026 10:00:00 GMT", "text/x")
    assert await pending.publish(False, ObjectMeta("text/x", {}, origin))
    obj = store.reader.open("b-1250000000", "k")
    assert obj is not None and obj.meta.origin == origin and obj.meta.content_type == "text/x"
    obj.close()
    record = next((tmp_path / ".cosedge" / "meta" / "b-1250000000").glob("*/*.json"))
    raw = json.loads(record.read_text())
    assert raw["origin"] == {
        "etag": '"e"',
        "last_modified": origin.last_modified,
        "content_type": "text/x",
    }
    raw["origin"] = {"etag": 5}
    record.write_text(json.dumps(raw))
    obj = store.reader.open("b-1250000000", "k")
    assert obj is not None and obj.meta.origin is None and obj.meta.content_type == "text/x"
    obj.close()


@pytest_twisted.ensureDeferred
async def test_a_published_copy_is_never_seen_without_its_content_type(tmp_path):
    """The folder store writes the record in the reactor turn that links the object into
    place (the durable write follows in a thread), so no hit ever finds the object with
    its extension's type instead of the origin's: right after the link, in the same turn,
    the record is there."""
    store = FolderStore(tmp_path, ["b-1250000000"])
    store.prepare()
    origin = OriginProvenance('"e"', "", "text/x-origin")
    meta = ObjectMeta("text/x-origin", {}, origin)
    pending = store.new_upload("b-1250000000", "k.bin")
    pending.write(b"bytes" * 1000)
    assert pending._fd is not None
    os.close(pending._fd)  # what publish's flush does, before it links
    pending._fd = None
    linked = pending._link(False, meta)  # the step publish runs on the reactor thread
    obj = store.reader.open("b-1250000000", "k.bin")
    assert obj is not None and obj.meta.content_type == "text/x-origin"
    assert obj.meta.origin == origin
    obj.close()
    assert await linked is True

"""The origin's own checksum of a body, checked before a copy is stored.

An origin that sends `Content-MD5` (RFC 1864), `Digest` (RFC 3230: `md5=<b64>,
sha-256=<b64>`), `Repr-Digest` or `Content-Digest` (RFC 9530: `sha-256=:<b64>:`) says what
the bytes should hash to; a body that hashes otherwise was damaged on the way (or the
origin changed it mid-flight) and is stored nowhere, as Alibaba OSS's `MirrorCheckMd5` does,
on by default here (`origin_fetch.check_digests`). The edge asks for identity encoding, so
for a whole 200 every one of these headers describes exactly the bytes received.

MD5 is what both stores compute of every write anyway (`PendingWrite.md5_digest`), so only a
SHA-256 costs a second hash, and it is taken as the bytes stream by, never by a second read.
Algorithms other than MD5 and SHA-256 are ignored; a value for one of those two that does not
decode to a digest of its size is a failure (hex, which some servers send instead of base64,
is accepted).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from twisted.web.http_headers import Headers

MD5 = "md5"
SHA256 = "sha-256"
_SIZES = {MD5: 16, SHA256: 32}
# Header name as the origin spells it in reasons, and how its members are written.
_LISTS = (("Digest", False), ("Repr-Digest", True), ("Content-Digest", True))
_MEMBER = re.compile(r"^\s*([A-Za-z0-9_.+-]+)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class ExpectedDigest:
    """One checksum an origin header promises: `header` and `algorithm` name it in the
    failure reason; `value` is the raw digest, or None when the header's value for a known
    algorithm is malformed (which fails the copy too: it cannot be checked)."""

    header: str
    algorithm: str
    value: bytes | None
    text: str  # as the origin wrote it, for the reason


def _decode(text: str, size: int) -> bytes | None:
    """The digest `text` encodes (base64, or hex as some servers send), None if neither."""
    text = text.strip()
    if len(text) == size * 2 and re.fullmatch(r"[0-9A-Fa-f]+", text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def parse_digests(headers: Headers) -> list[ExpectedDigest]:
    """Every MD5 and SHA-256 the response's headers promise, malformed ones included."""
    expected: list[ExpectedDigest] = []
    for raw in headers.getRawHeaders(b"content-md5") or []:
        text = raw.decode("latin-1").strip()
        expected.append(ExpectedDigest("Content-MD5", MD5, _decode(text, 16), text))
    for name, structured in _LISTS:
        for raw in headers.getRawHeaders(name.encode("ascii")) or []:
            for member in raw.decode("latin-1").split(","):
                match = _MEMBER.match(member)
                if match is None:
                    continue  # not `algorithm=value`: nothing this check can use
                algorithm, text = match.group(1).lower(), match.group(2)
                if algorithm not in _SIZES:
                    continue  # unknown algorithms are ignored (RFC 3230 and 9530 say so)
                if structured:
                    # A structured-field byte sequence `:<b64>:`, maybe with parameters.
                    text = text.split(";", 1)[0].strip()
                    if len(text) >= 2 and text[0] == text[-1] == ":":
                        text = text[1:-1]
                    else:
                        expected.append(ExpectedDigest(name, algorithm, None, text))
                        continue
                value = _decode(text, _SIZES[algorithm])
                expected.append(ExpectedDigest(name, algorithm, value, text))
    return expected


class DigestCheck:
    """The digests one response promises, and the hashing needed to check them.

    `sink(write)` is what the body is written through: `write` itself unless a SHA-256 is
    to be checked. `mismatch(md5)` is the reason to refuse the body (None when it matches
    everything promised), given the MD5 the store computed of what it wrote.
    """

    def __init__(self, expected: list[ExpectedDigest]) -> None:
        self.expected = expected
        wants_sha = any(e.algorithm == SHA256 for e in expected)
        self._sha256 = hashlib.sha256() if wants_sha else None

    @classmethod
    def of(cls, headers: Headers, enabled: bool = True) -> DigestCheck:
        """The check for a response's headers; an empty one when checking is switched off."""
        return cls(parse_digests(headers) if enabled else [])

    def sink(self, write: Callable[[bytes], None]) -> Callable[[bytes], None]:
        sha = self._sha256
        if sha is None:
            return write

        def hashed(data: bytes) -> None:
            write(data)  # first: a write that fails must not count as hashed
            sha.update(data)

        return hashed

    def mismatch(self, md5: bytes) -> str | None:
        computed = {MD5: md5, SHA256: self._sha256.digest() if self._sha256 else b""}
        for item in self.expected:
            if item.value is None:
                return (
                    f"{item.header} {item.algorithm} value {item.text[:60]!r} is malformed; "
                    "nothing stored"
                )
            if item.value != computed[item.algorithm]:
                got = base64.b64encode(computed[item.algorithm]).decode()
                want = base64.b64encode(item.value).decode()
                return (
                    f"{item.header} {item.algorithm} mismatch: the origin said {want}, "
                    f"the body hashes to {got}; nothing stored"
                )
        return None

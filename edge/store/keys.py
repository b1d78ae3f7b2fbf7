"""Object keys and listing prefixes: what may name an object, judged before any I/O.

COS keys are arbitrary strings; a folder store turns them into paths, and an S3 store into
URLs, so the rules here refuse what either could misread (`..` segments, NUL, backslashes,
control characters, over-long keys) with one message per reason. Every store and the web
layer judge keys through this module, so a key valid for one is valid for all.
"""

from __future__ import annotations

import re

MAX_KEY_BYTES = 850  # COS's own limit on object key length
_MAX_SEGMENT_BYTES = 255  # NAME_MAX on the filesystems we run on


class InvalidKey(ValueError):
    """A key that could address something outside its bucket, or no file at all."""


class UnsafePath(Exception):
    """A write, delete or listing whose folder path goes through a symbolic link.

    Reads may follow an operator's link that stays inside the bucket; nothing else may,
    because a link to elsewhere (made by an operator or any local process) would turn a
    PUT, a DELETE or an origin copy into a write anywhere on the host. Deliberately not an
    `OSError`, so no handler written for ordinary I/O errors swallows it.
    """


_CONTROL = re.compile("[\x00-\x1f\x7f]")


# Keys judged valid lately: a hot key is judged once, not on every hit (the full check was
# 3 us, a twentieth of a hit). Small, so its worst case (850-byte keys) stays ~4 MB.
_VALID_SEEN: dict[str, None] = {}
_VALID_SEEN_MAX = 4096


def validate_key(key: str) -> str:
    """Refuse keys the filesystem would interpret: `.`/`..`/empty segments, NUL, backslash.

    Checked on the decoded key before any filesystem call (SPEC §3); a percent-encoded `/`
    has been decoded by now, so it is judged like any other `/`.
    """
    if key in _VALID_SEEN:
        return key
    _check_key(key)
    if len(_VALID_SEEN) >= _VALID_SEEN_MAX:
        _VALID_SEEN.clear()
    _VALID_SEEN[key] = None
    return key


def _check_key(key: str) -> None:
    if not key:
        raise InvalidKey("empty key")
    if "\0" in key:
        raise InvalidKey("key contains NUL")
    if "\\" in key:
        raise InvalidKey("key contains a backslash")
    if _CONTROL.search(key):
        raise InvalidKey("key contains a control character")
    encoded = key.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKey(f"key longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey("key starts with '/'")
    segments = key.split("/")
    if segments[-1] == "":
        segments.pop()  # a trailing '/' names a folder-style key; its parts are still checked
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidKey(f"key has a {segment or 'empty'!r} segment")
        if len(segment.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES:
            raise InvalidKey(f"a key segment is longer than {_MAX_SEGMENT_BYTES} bytes")


def validate_prefix(prefix: str, what: str = "prefix") -> str:
    """Refuse a listing prefix (or marker) no key could start with: the same rules as
    `validate_key` for every complete segment, plus no control characters.

    The last segment may be partial (`a/b` matches `a/bc`), may be empty (a trailing `/`)
    and may be `.` or `..`, since keys such as `..a` are valid; only complete segments ever
    become folder names on disk, so a partial one never walks anywhere. A refusal is a 400
    InvalidArgument rather than an empty listing: such a prefix is a client bug (or a probe)
    and saying so is clearer than silently matching nothing.
    """
    if not prefix:
        return prefix
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in prefix):
        raise InvalidKey(f"{what} contains a control character")
    if "\\" in prefix:
        raise InvalidKey(f"{what} contains a backslash")
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} longer than {MAX_KEY_BYTES} bytes")
    if prefix.startswith("/"):
        raise InvalidKey(f"{what} starts with '/'")
    segments = prefix.split("/")
    for i, segment in enumerate(segments):
        if i < len(segments) - 1 and segment in ("", ".", ".."):
            raise InvalidKey(f"{what} has a {segment or 'empty'!r} segment")
        if len(segment.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES:
            raise InvalidKey(f"a {what} segment is longer than {_MAX_SEGMENT_BYTES} bytes")
    return prefix

"""The signed requests `cosedge-admin`'s commands send (SPEC §7), shared by every command
module (cli.py and those it adds, such as refresh.py), so none imports another's."""

from __future__ import annotations

import base64
import hashlib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from edge.api import cosxml
from edge.api.signature import sign


@dataclass(frozen=True)
class Reply:
    """The edge's answer: its status and whole body (API answers are small documents)."""

    status: int
    body: bytes


class AdminError(Exception):
    """A command that cannot go on: printed as one line, exit status 2."""


def call(
    endpoint: str,
    secret_id: str,
    secret_key: str,
    method: str,
    bucket: str,
    params: dict[str, str],
    body: bytes = b"",
    content_type: str | None = None,
    key: str = "",
    timeout: float = 30.0,
) -> Reply:
    """One signed request, path style (`/<bucket>/<key>?...`, the bucket's root without a
    key).

    Path style signs the whole path, bucket included (the edge refuses a path-style
    signature that leaves the bucket out: it could be replayed against another bucket),
    and the Host, as the SDKs do.
    """
    split = urllib.parse.urlsplit(endpoint)
    if split.scheme != "http" or not split.netloc:
        raise AdminError(f"--endpoint must be http://HOST[:PORT], not {endpoint!r}")
    headers: dict[str, str] = {"host": split.netloc}
    if body or method == "PUT":
        headers["content-md5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
        headers["content-length"] = str(len(body))
    if content_type:
        headers["content-type"] = content_type
    auth = sign(secret_id, secret_key, method, f"/{bucket}/{key}", params, headers)
    query = urllib.parse.urlencode(params)
    path = f"{urllib.parse.quote(bucket)}/{urllib.parse.quote(key)}"
    url = f"{endpoint.rstrip('/')}/{path}" + (f"?{query}" if query else "")
    request = urllib.request.Request(url, data=body or None, method=method)
    for name, value in headers.items():
        if name != "host":
            request.add_header(name, value)
    request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read())
    except OSError as e:
        raise AdminError(f"cannot reach {endpoint}: {e}") from None


def error_text(reply: Reply) -> str:
    try:
        root = cosxml.parse(reply.body)
        return f"{reply.status} {root.findtext('Code')}: {root.findtext('Message')}"
    except cosxml.XMLProblem:
        return f"HTTP {reply.status}"

"""The console's JavaScript signer (cos-sign.js, run in Chromium with WebCrypto) gives the
same COS signature as the edge's Python signer (`edge.api.signature.sign`) on the same
inputs: the edge verifies what the console signs because both make the same string."""

from __future__ import annotations

from typing import Any

import pytest

from edge.api.signature import sign
from tests.browser.conftest import ConsoleEdge

NOW = 1_764_633_600  # a fixed instant: both signers get the same q-sign-time

CASES: list[tuple[str, str, str, str, dict[str, str], dict[str, str]]] = [
    ("AKIDone", "secret", "GET", "/", {}, {"host": "127.0.0.1:8081"}),
    (
        "AKIDtwo",
        "another-secret",
        "PUT",
        "/examplebucket-1250000000/",
        {"origin": ""},
        {"host": "127.0.0.1:8081", "Content-Type": "application/xml"},
    ),
    (
        "AKIDthree",
        "s3cr3t",
        "GET",
        "/examplebucket-1250000000/",
        {"Prefix": "img/a b", "max-keys": "10", "marker": "x&y=z", "cosedge-copies": ""},
        {},
    ),
    (
        "AKIDfour",
        "clé-secrète-密钥",
        "GET",
        "/examplebucket-1250000000/图片/你好 world (1)*!'.txt",
        {"cosedge-copy": "", "名字": "值 ~*!'()"},
        {"host": "examplebucket-1250000000.cos.ap-guangzhou.myqcloud.com", "X-Cos-Meta-Ü": "ü"},
    ),
    ("AKIDfive", "k", "DELETE", "/b/a%2Fb+c", {"uploadId": "1+2/3="}, {"Range": "bytes=0-9"}),
]

SIGN_IN_BROWSER = """
const [args, done] = [arguments[0], arguments[arguments.length - 1]];
CosSign.sign(args.id, args.key, args.method, args.path, args.params, args.headers,
             {now: args.now, expires: args.expires})
  .then(done, (e) => done("ERROR " + e));
"""


@pytest.mark.browser
@pytest.mark.parametrize("case", CASES, ids=[c[2] + " " + c[3][:24] for c in CASES])
def test_javascript_signer_matches_python(
    browser: Any, console_edge: ConsoleEdge, case: tuple[Any, ...]
) -> None:
    """Query parameters (blank, upper-case, reserved characters), signed headers, non-ASCII
    keys, names, values and secrets: the Authorization value is identical, character for
    character, including the sorted, lowercased name lists."""
    secret_id, secret_key, method, path, params, headers = case
    if not browser.current_url.startswith(console_edge.base):
        browser.get(console_edge.base + "/console/")
    args = {
        "id": secret_id,
        "key": secret_key,
        "method": method,
        "path": path,
        "params": params,
        "headers": headers,
        "now": NOW,
        "expires": 900,
    }
    from_js = browser.execute_async_script(SIGN_IN_BROWSER, args)
    expected = sign(secret_id, secret_key, method, path, params, headers, now=NOW, expires=900)
    assert from_js == expected

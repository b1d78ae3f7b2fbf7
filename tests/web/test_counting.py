"""Which outcome each public request counts as (`edge.web.counting`), in memory: no
multiprocess folder is set, so the default registry holds this process's values and each
test reads how much its requests added."""

from __future__ import annotations

from prometheus_client import REGISTRY

from edge.metrics.families import UNKNOWN_BUCKET
from tests.web.conftest import BUCKET, DOMAIN, PATH_BUCKET, Tree
from tests.web.test_tree import answer


def requests_counted(bucket: str, outcome: str) -> float:
    labels = {"bucket": bucket, "outcome": outcome}
    return REGISTRY.get_sample_value("cosedge_requests_total", labels) or 0.0


def bytes_counted(bucket: str) -> float:
    return REGISTRY.get_sample_value("cosedge_response_bytes_total", {"bucket": bucket}) or 0.0


def counted(tree: Tree, method: str, url: str, **kwargs: object) -> dict[tuple[str, str], float]:
    """What one request added to each (bucket, outcome), and its status under `status`."""
    keys = [
        (b, o)
        for b in (BUCKET, PATH_BUCKET, UNKNOWN_BUCKET, "_service")
        for o in ("hit", "redirect", "not_found", "error", "api")
    ]
    before = {k: requests_counted(*k) for k in keys}
    status, _, _ = answer(tree, method, url, **kwargs)  # type: ignore[arg-type]
    added = {k: requests_counted(*k) - before[k] for k in keys}
    changed = {k: v for k, v in added.items() if v}
    changed[("status", str(status))] = 1
    return changed


def test_each_kind_of_request_counts_once_under_its_outcome(tree: Tree):
    """A hit, a 304, a 206, a miss's redirect, a 404, a refused read, an unknown bucket and
    a listing each add exactly one to the one (bucket, outcome) they are."""
    tree.drop_file(BUCKET, "a.txt", b"hello")
    host = f"http://{DOMAIN}"
    assert counted(tree, "GET", f"{host}/a.txt") == {(BUCKET, "hit"): 1, ("status", "200"): 1}
    ranged = counted(tree, "GET", f"{host}/a.txt", headers={"Range": "bytes=0-1"})
    assert ranged == {(BUCKET, "hit"): 1, ("status", "206"): 1}
    _, headers, _ = answer(tree, "GET", f"{host}/a.txt")
    etag = (headers.getRawHeaders("etag") or [""])[0]
    fresh = counted(tree, "GET", f"{host}/a.txt", headers={"If-None-Match": etag})
    assert fresh == {(BUCKET, "hit"): 1, ("status", "304"): 1}
    miss = counted(tree, "GET", f"{host}/missing.txt")
    assert miss == {(BUCKET, "redirect"): 1, ("status", "302"): 1}
    path_style = f"http://127.0.0.1/{PATH_BUCKET}"
    no_origin = counted(tree, "GET", f"{path_style}/nothing")
    assert no_origin == {(PATH_BUCKET, "not_found"): 1, ("status", "404"): 1}
    unknown = counted(tree, "GET", "http://127.0.0.1/nosuch-1250000000/k")
    assert unknown == {(UNKNOWN_BUCKET, "not_found"): 1, ("status", "404"): 1}
    bad_range = counted(tree, "GET", f"{host}/a.txt", headers={"Range": "bytes=90-99"})
    assert bad_range == {(BUCKET, "error"): 1, ("status", "416"): 1}
    upload = counted(tree, "PUT", f"{host}/new.txt", data=b"x")
    assert upload == {(BUCKET, "error"): 1, ("status", "403"): 1}  # anonymous: refused
    listing = counted(tree, "GET", "http://127.0.0.1/")
    assert listing == {("_service", "error"): 1, ("status", "403"): 1}


def test_body_bytes_are_counted_per_bucket(tree: Tree):
    """The bytes of a hit's body count for its bucket; a redirect's empty body adds none."""
    tree.drop_file(BUCKET, "b.bin", b"z" * 1000)
    before = bytes_counted(BUCKET)
    answer(tree, "GET", f"http://{DOMAIN}/b.bin")
    answer(tree, "HEAD", f"http://{DOMAIN}/b.bin")
    answer(tree, "GET", f"http://{DOMAIN}/b.bin", headers={"Range": "bytes=0-9"})
    assert bytes_counted(BUCKET) - before == 1010

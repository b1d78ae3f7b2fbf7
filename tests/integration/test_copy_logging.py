"""What the copier logs: events that carry the miss's request id, no connection-factory
chatter, one queue-full warning per interval, and local failures as errors."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.logger import LogLevel, formatEvent

from tests.integration.conftest import BUCKET


@pytest_twisted.ensureDeferred
async def test_copy_events_carry_the_request_id_and_no_factory_chatter(
    edges, origin, captured_events
):
    """The "Copied" event names the x-cos-request-id of the miss that started it, and a
    copy logs no "Starting factory"/"Stopping factory" lines (it used to log four)."""
    origin.serve("/a.txt", body=b"aaa")
    edge = await edges.start(edges.config(origin.address))
    miss = await edge.get("a.txt")
    await edge.copies_done()
    request_id = miss.header("x-cos-request-id")
    copied = [e for e in captured_events if str(e.get("log_format", "")).startswith("Copied")]
    assert [e["request_id"] for e in copied] == [request_id]
    chatter = [
        formatEvent(e)
        for e in captured_events
        if "factory" in formatEvent(e).lower() and "edge.origin." in formatEvent(e)
    ]
    assert chatter == []


@pytest_twisted.ensureDeferred
async def test_queue_full_is_one_warning_with_a_count(edges, origin, captured_events):
    """With one copy slot, a queue of one and a hanging origin, 30 misses of different
    keys give one queue-full warning (counting the skip), not 28."""
    for n in range(30):
        origin.serve(f"/k{n}", body=b"x", headers_delay=30)
    edge = await edges.start(
        edges.config(origin.address, fetch={"concurrency": 1, "queue_size": 1})
    )
    for n in range(30):
        assert (await edge.get(f"k{n}")).status == 302
    warnings = [e for e in captured_events if e.get("reason") == "queue full"]
    assert len(warnings) == 1 and warnings[0]["count"] == 1
    assert edge.copier.counters["overflow"] == 28
    origin.drop_all()


@pytest.mark.logs_errors
@pytest_twisted.ensureDeferred
async def test_a_copy_failing_for_a_local_reason_is_an_error_event(edges, origin, captured_events):
    """A copy the origin answered well but this machine could not store (here a file
    stands where the key needs a folder) is an error event with the reason and the
    request id, not a traceback at critical level; nothing is stored."""
    origin.serve("/blocked/x.txt", body=b"data")
    edge = await edges.start(edges.config(origin.address))
    (edge.data_dir / BUCKET / "blocked").write_bytes(b"a file, not a folder")
    miss = await edge.get("blocked/x.txt")
    await edge.copies_done()
    errors = [e for e in captured_events if e.get("log_level") == LogLevel.error]
    assert len(errors) == 1, [formatEvent(e) for e in errors]
    assert errors[0]["local"] is True and errors[0]["key"] == "blocked/x.txt"
    assert errors[0]["request_id"] == miss.header("x-cos-request-id")
    assert "log_failure" not in errors[0]
    assert (edge.data_dir / BUCKET / "blocked").read_bytes() == b"a file, not a folder"

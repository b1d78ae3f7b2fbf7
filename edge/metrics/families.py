"""The metric families of SPEC §9, and the calls the rest of the edge counts with.

Made when this module is first imported, so the multiprocess folder must be chosen before
(`edge.metrics.folder.use_folder`). Labels stay bounded: a bucket label is a configured or
API-made bucket's name (requests for any other name count under `UNKNOWN_BUCKET`), an
outcome or reason is one of a fixed set of words, never a key or an address.

Gauges name how worker processes add up (`multiprocess_mode`): copies queued and in flight
are the sum over live processes; the ISP table's generation and load time are the largest
over live processes (they all read the same files).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, values

from edge.metrics.folder import this_pid

if values.ValueClass is not values.MutexValue:  # multiprocess mode: files named by pid
    values.ValueClass = values.MultiProcessValue(process_identifier=this_pid)

UNKNOWN_BUCKET = "_unknown"  # the bucket label of a request for no served bucket
NO_BUCKET = "_service"  # the bucket label of a request for the service root (`GET /`)

REQUESTS = Counter(
    "cosedge_requests",
    "Requests answered on the public port, by bucket and outcome (hit, redirect, "
    "not_found, error for object reads; api for other requests).",
    ["bucket", "outcome"],
)
RESPONSE_BYTES = Counter(
    "cosedge_response_bytes",
    "Body bytes sent on the public port, by bucket.",
    ["bucket"],
)
COPIES = Counter(
    "cosedge_copies",
    "Background copies from origins that ended or were never started, by bucket, outcome "
    "and reason class.",
    ["bucket", "outcome", "reason"],
)
COPIED_BYTES = Counter(
    "cosedge_copied_bytes",
    "Bytes of objects copied from origins into the store, by bucket.",
    ["bucket"],
)
COPY_DURATION = Histogram(
    "cosedge_copy_duration_seconds",
    "Time from a copy's start (its key's lock taken) to its end, whatever the outcome.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
COPIES_QUEUED = Gauge(
    "cosedge_copies_queued",
    "Copies waiting for a free fetch slot, summed over processes.",
    multiprocess_mode="livesum",
)
COPIES_IN_FLIGHT = Gauge(
    "cosedge_copies_in_flight",
    "Copies running now, summed over processes.",
    multiprocess_mode="livesum",
)
ORIGIN_RESPONSES = Counter(
    "cosedge_origin_responses",
    "Answers of origins to copy fetches, by status class (2xx..5xx), or error when no "
    "answer came (connection refused or lost, timeout).",
    ["status_class"],
)
BREAKER_TRANSITIONS = Counter(
    "cosedge_origin_breaker_transitions",
    "Origin circuit breaker state changes, by the state entered (open, half-open, closed).",
    ["state"],
)
ISP_TABLE_GENERATION = Gauge(
    "cosedge_isp_table_generation",
    "The ISP tables in force: the Unix time of their `# generation:` stamp (0: unstamped).",
    multiprocess_mode="livemax",
)
ISP_TABLE_LOAD_SECONDS = Gauge(
    "cosedge_isp_table_load_seconds",
    "How long the last load of the ISP tables (and the check of the config) took.",
    multiprocess_mode="livemax",
)

# Label children by their values: `labels()` takes a lock and builds a tuple on each call,
# a visible share of a hit's cost; the counters' children are made once and kept.
_request_children: dict[tuple[str, str], tuple[object, object]] = {}


def count_request(bucket: str, outcome: str, body_bytes: int) -> None:
    """One finished request on the public port."""
    children = _request_children.get((bucket, outcome))
    if children is None:
        children = (REQUESTS.labels(bucket, outcome), RESPONSE_BYTES.labels(bucket))
        _request_children[(bucket, outcome)] = children
    requests, sent = children
    requests.inc()  # type: ignore[attr-defined]
    if body_bytes:
        sent.inc(body_bytes)  # type: ignore[attr-defined]


def count_copy(
    bucket: str, outcome: str, reason: str, copied: int = 0, seconds: float | None = None
) -> None:
    """One copy ended (`seconds` it ran) or was not started (`seconds` None)."""
    COPIES.labels(bucket, outcome, reason).inc()
    if copied:
        COPIED_BYTES.labels(bucket).inc(copied)
    if seconds is not None:
        COPY_DURATION.observe(max(seconds, 0.0))


def count_origin_response(status: int | None) -> None:
    """One origin answer (`status`), or none at all (None)."""
    status_class = "error" if status is None else f"{min(max(status // 100, 1), 5)}xx"
    ORIGIN_RESPONSES.labels(status_class).inc()


def count_breaker_transition(state: str) -> None:
    BREAKER_TRANSITIONS.labels(state).inc()


def set_copy_load(queued: int, in_flight: int) -> None:
    COPIES_QUEUED.set(queued)
    COPIES_IN_FLIGHT.set(in_flight)


def set_isp_tables(generation: float, load_seconds: float) -> None:
    ISP_TABLE_GENERATION.set(generation)
    ISP_TABLE_LOAD_SECONDS.set(load_seconds)

"""Getting every ``--from`` source onto disk and read: downloads and the reader per kind.

`cosedge-isp update` is a synchronous command, but URL sources are fetched with treq on a
reactor of its own, streamed to a work folder with a progress line; `read_source` then picks
the strict reader for the source's kind. Kept apart from the readers so they stay pure
file parsers, and apart from the command so it only orchestrates.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge.isp.asncsv import ASNMap, read_asn_csv
from edge.isp.ip2region import read_ip2region
from edge.isp.sources import SourceData, SourceError, SourceSpec, read_cidr_list

ProgressPrinter = Callable[[int, int | None], None]


def stderr_progress(url: str) -> ProgressPrinter:
    """A progress line on stderr, redrawn at most every MiB, finished with a newline."""
    state = {"shown": -1}

    def show(received: int, total: int | None) -> None:
        step = received >> 20
        done = total is not None and received >= total
        if step == state["shown"] and not done and received:
            return
        state["shown"] = step
        of = f" of {total / 2**20:.1f} MiB" if total else ""
        end = "\n" if done else ""
        sys.stderr.write(f"\rfetching {url}: {received / 2**20:.1f} MiB{of}{end}")
        sys.stderr.flush()

    return show


def fetch_to_file(
    reactor: Any, url: str, target: Path, progress: ProgressPrinter | None = None
) -> Any:
    """Download `url` into `target` with treq; a non-200 answer fails the update.

    Returns a Deferred firing with `target`. The body is streamed to disk, never held whole.
    """
    import treq
    from twisted.internet import defer

    @defer.inlineCallbacks
    def run() -> Any:
        response = yield treq.get(url, reactor=reactor, unbuffered=True)
        if response.code != 200:
            yield response.content()
            raise SourceError(f"{url}: HTTP {response.code}")
        total = response.length if isinstance(response.length, int) else None
        received = 0
        with target.open("wb") as out:

            def collect(chunk: bytes) -> None:
                nonlocal received
                out.write(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)

            yield treq.collect(response, collect)
        if progress is not None:
            progress(received, received)
        if total is not None and received != total:
            raise SourceError(f"{url}: got {received} of {total} bytes")
        return target

    return run()


def read_source(spec: SourceSpec, path: Path, asn_map: ASNMap | None) -> SourceData:
    """Read a local file (a downloaded URL has been saved to `path` already)."""
    if spec.kind == "cidr":
        return read_cidr_list(spec, path, spec.location)
    if spec.kind == "asn-csv":
        if asn_map is None:
            raise SourceError(f"{spec}: needs an ASN map (--asns)")
        return read_asn_csv(spec, path, asn_map)
    return read_ip2region(spec, path)


def download(specs: Sequence[SourceSpec], workdir: Path) -> dict[SourceSpec, Path]:
    """Fetch URL sources with treq on a reactor of their own (the command is synchronous)."""
    urls = [s for s in specs if s.is_url]
    if not urls:
        return {}
    from twisted.internet import defer
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor

    fetched: dict[SourceSpec, Path] = {}
    failures: list[Any] = []

    def start() -> None:
        deferreds = []
        for i, spec in enumerate(urls):
            d = fetch_to_file(
                reactor, spec.location, workdir / f"source-{i}", stderr_progress(spec.location)
            )
            d.addCallback(lambda path, spec=spec: fetched.__setitem__(spec, path))
            deferreds.append(d)
        done = defer.gatherResults(deferreds, consumeErrors=True)

        def failed(f: Any) -> None:
            failures.append(f.value.subFailure.value)

        done.addErrback(failed)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    if failures:
        error = failures[0]
        if isinstance(error, SourceError):
            raise error
        raise SourceError(f"download failed: {error}")
    return fetched

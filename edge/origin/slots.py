"""Copy slots: how many copies run, in all and per origin, and the queues waiting for one.

The global `concurrency` bounds what the edge spends; `per_origin_concurrency` bounds what
one origin host is asked at once, so a slow origin holds at most its share of the slots.
Waiting copies queue per origin, in arrival order, and a freed slot goes to the origins in
turn (round robin), so a burst of misses on one origin does not delay another's copies.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from edge.origin.fetch import CopyJob


class CopySlots:
    """Running counts (in all, per origin `host:port`) and the per-origin queues."""

    def __init__(self) -> None:
        self.running = 0
        self.queued = 0
        self._running_by: dict[str, int] = {}
        self._queues: OrderedDict[str, deque[CopyJob]] = OrderedDict()

    def can_start(self, host: str, concurrency: int, per_origin: int) -> bool:
        """A slot is free, in all and for `host`. (Copies queue only while none is: a
        freed slot goes to the queue at once, so a new copy cannot pass a waiting one but
        after a reload raised a cap.)"""
        return self.running < concurrency and self._running_by.get(host, 0) < per_origin

    def take(self, host: str) -> None:
        self.running += 1
        self._running_by[host] = self._running_by.get(host, 0) + 1

    def free(self, host: str) -> None:
        self.running -= 1
        left = self._running_by.get(host, 1) - 1
        if left > 0:
            self._running_by[host] = left
        else:
            self._running_by.pop(host, None)

    def running_for(self, host: str) -> int:
        return self._running_by.get(host, 0)

    def enqueue(self, job: CopyJob) -> None:
        self._queues.setdefault(job.host, deque()).append(job)
        self.queued += 1

    def remove(self, job: CopyJob) -> bool:
        queue = self._queues.get(job.host)
        if queue is None or job not in queue:
            return False
        queue.remove(job)
        self.queued -= 1
        if not queue:
            del self._queues[job.host]
        return True

    def next_job(self, concurrency: int, per_origin: int) -> CopyJob | None:
        """The next queued copy that may start, taking origins in turn; None when the
        slots are full or every waiting origin is at its own cap."""
        if self.running >= concurrency:
            return None
        for host, queue in self._queues.items():
            if self._running_by.get(host, 0) >= per_origin:
                continue
            job = queue.popleft()
            self.queued -= 1
            if queue:
                self._queues.move_to_end(host)  # its next copy waits for the others' turns
            else:
                del self._queues[host]
            return job
        return None

    def clear(self) -> list[CopyJob]:
        """Empty every queue (the edge is stopping); the copies that were waiting."""
        jobs = [job for queue in self._queues.values() for job in queue]
        self._queues.clear()
        self.queued = 0
        return jobs

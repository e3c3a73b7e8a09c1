"""What ``GET /metrics`` shows (Prometheus text format, prometheus_client): how deep the
queue is, how many fills are answered (``rate()`` of the counter is fills per second), how
long they wait and run, how many fills the worker runs together and how busy it is, how many
requests are turned away and why, and what the process holds (resident memory and open
files, the carried contexts, the heap trims): the figures a long-running server is judged by.

One registry per server, not the library's global one, so several servers in one process
(tests, benchmarks) keep their own counts.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from coda_model.memory import heap_bytes

# a typing fill is ~0.05-1 s on a CPU, a hole fill several seconds; a backlog, minutes
SECONDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ROWS = (1, 2, 4, 8, 16, 32, 64)  # fills per run: batch sizes are the probe's powers of two


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, depth: Callable[[], int], max_queue: int,
                 carried: Callable[[], int] = lambda: 0,
                 trims: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_open_fds, ...
        Gauge("coda_carried_contexts", "Clients and documents whose context keys/values are "
              "kept for their next fill", registry=r).set_function(carried)
        Gauge("coda_memory_trims", "Times the model worker handed free heap pages back to "
              "the system", registry=r).set_function(trims)
        if heap_bytes() is not None:  # glibc: live heap beside free pages it keeps
            Gauge("coda_heap_in_use_bytes", "C heap handed out (tensors, caches)", registry=r
                  ).set_function(lambda: (heap_bytes() or (0, 0))[0])
            Gauge("coda_heap_free_bytes", "C heap held free by the allocator (not all of it "
                  "resident)", registry=r).set_function(lambda: (heap_bytes() or (0, 0))[1])
        Gauge("coda_queue_depth", "Fill requests waiting or running", registry=r
              ).set_function(depth)
        Gauge("coda_queue_limit", "Fill requests allowed to wait or run (--max-queue)",
              registry=r).set(max_queue)
        self.fills = Counter("coda_fills", "Fill requests finished, by endpoint and outcome "
                             "(ok, superseded, cancelled, failed)", ["endpoint", "outcome"],
                             registry=r)
        self.rejected = Counter("coda_rejected", "Requests turned away before any fill ran, "
                                "by reason (queue_full, forbidden)", ["reason"], registry=r)
        self.latency = Histogram("coda_fill_seconds", "Fill request latency, arrival to answer",
                                 ["endpoint"], buckets=SECONDS, registry=r)
        self.waited = Histogram("coda_queue_wait_seconds", "Time a fill waited for the model "
                                "worker", buckets=SECONDS, registry=r)
        self.model = Histogram("coda_model_seconds", "Time the model worked on a fill",
                               buckets=SECONDS, registry=r)
        self.batch_rows = Histogram("coda_batch_rows", "Fills per model run (1: alone, more: "
                                    "rows of one batch)", buckets=ROWS, registry=r)
        self.busy = Counter("coda_worker_busy_seconds", "Seconds the model worker ran fills "
                            "(its rate is the worker's busy share)", registry=r)
        self.gathered = Counter("coda_batch_gather_seconds", "Seconds the worker waited for "
                                "the last batch's clients before a batch", registry=r)

    def worker_ran(self, rows: int, ran_s: float, gathered_s: float) -> None:
        """One run of the model worker (``Scheduler.on_run``): how a batch server spends
        its time, as rates (fills per run, busy share, gather wait per second)."""
        self.batch_rows.observe(rows)
        self.busy.inc(ran_s)
        self.gathered.inc(gathered_s)

    def text(self) -> bytes:
        return generate_latest(self.registry)

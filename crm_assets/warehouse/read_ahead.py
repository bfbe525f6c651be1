"""Reading ahead on a second connection: the next batches are read and prepared while the caller writes.

A clean run alternates between reading changed raw rows (the database extracting JSON fields, polars
parsing and coercing them) and writing candidates. A second connection (on PostgreSQL served by a second
server process; on SQLite a reader of the write-ahead log, which the writer does not block) reads and
prepares the next batch meanwhile: the two halves use both cores instead of taking turns on one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

import sqlalchemy as sa

T = TypeVar("T")

_POLL_SECONDS = 0.1


class _Done:
    """The producer's last message: it finished, or failed with `error`."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def read_ahead(
    engine: sa.Engine, produce: Callable[[sa.Connection], Iterator[T]], depth: int = 1
) -> Generator[T, None, None]:
    """Yield what `produce(conn)` yields, produced on a thread with a connection of its own, up to `depth`
    items ahead of the consumer (memory stays bounded).

    That connection sees committed rows only: read nothing the consumer's transaction has written. An
    error in `produce` is raised in the consumer; a consumer that stops early (an error, a closed
    generator) stops the producer and closes its connection before this returns.
    """
    items: queue.Queue[T | _Done] = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def put(item: T | _Done) -> bool:
        while not stopped.is_set():
            try:
                items.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            with engine.connect() as conn:
                for item in produce(conn):
                    if not put(item):
                        return
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Done(exc))
            return
        put(_Done())

    producer = threading.Thread(target=run, name="read-ahead", daemon=True)
    producer.start()
    try:
        while not isinstance(item := items.get(), _Done):
            yield item
        if item.error is not None:
            raise item.error
    finally:
        stopped.set()
        producer.join()

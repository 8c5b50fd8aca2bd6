"""This process's writes to the SQLite file: one connection, commits shared.

Every write transaction of the process's threads runs on one connection,
one at a time. A transaction that ends while other threads wait to write
leaves the SQLite transaction open for them: each of theirs runs inside
it, under a savepoint of its own (a body that raises rolls back to it and
undoes only its own writes; the group's first needs none, a rollback of
the whole transaction undoes only its writes), and the last one commits
for all of them (group commit). No caller returns before the COMMIT that holds its writes
has returned, so what a caller acts on is durable, at NORMAL (kill -9) as
at FULL (power cut), where one fsync then serves the whole group.

Before, each thread had its own connection and writers queued in SQLite's
busy handler, which sleeps (1, 2, 5, 10 ms...) instead of waking the next
writer at the commit: at synchronous=FULL, where a commit takes an fsync,
a fan-out's workers spent most of their time asleep there (issue 11:
1.85 ms per task on 1 -> 100 -> 1, against 0.68 on a chain).

Other processes on the same file (the CLI, the dashboard) are still kept
apart by SQLite's own lock: BEGIN IMMEDIATE waits for them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

#: Most transactions one commit holds: a group's first caller waits for the
#: last one's writes, so groups are bounded.
MAX_GROUP = 64


class GroupCommitWriter:
    """Runs write transactions on one connection, committing waiting ones together."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        lock = threading.Lock()
        #: Two conditions on one lock, so that each wake-up is for a thread
        #: that can use it: `_free` (the connection is free: one waiter takes
        #: it) and `_done` (a group committed, or failed: all its callers).
        self._cond = self._free = threading.Condition(lock)
        self._done = threading.Condition(lock)
        self._using = False     # a thread has the connection now
        self._owner = 0         # which one
        self._waiting = 0       # threads waiting for it
        self._group = 0         # number of the open SQLite transaction (0: none)
        self._members = 0       # transactions it holds so far
        self._last = 0          # number of the last group made
        self._committed = 0     # number of the last group committed
        self._failed: dict[int, BaseException] = {}  # groups whose commit failed
        self._close_when_done = False  # close() came while a group was open

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` in a transaction: its writes are committed (durably) when this returns."""
        conn, group = self._enter()
        try:
            result = fn(conn)
        except BaseException as exc:
            self._undo_step(conn, group, exc)
            raise
        self._keep_step(conn, group)
        return result

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """`run` for a block: its writes are committed when it exits."""
        conn, group = self._enter()
        try:
            yield conn
        except BaseException as exc:
            self._undo_step(conn, group, exc)
            raise
        self._keep_step(conn, group)

    def _enter(self) -> tuple[sqlite3.Connection, int]:
        """Wait for the connection; a savepoint in the open transaction, or a new one."""
        with self._cond:
            if self._using and self._owner == threading.get_ident():
                raise RuntimeError("a write transaction inside another on the same "
                                   "thread would wait for itself")
            self._waiting += 1
            while self._using:
                self._free.wait()
            self._waiting -= 1
            self._using, self._owner = True, threading.get_ident()
        try:
            conn = self._begin()
            if self._members:  # the group's first transaction needs no savepoint
                conn.execute("SAVEPOINT step")
        except BaseException:
            self._hand_on()
            raise
        self._members += 1
        return conn, self._group

    def _undo_step(self, conn: sqlite3.Connection, group: int, exc: BaseException) -> None:
        if self._members == 1:  # the first: only its own writes to undo
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._close_group()
        elif conn.in_transaction:
            conn.execute("ROLLBACK TO step")
            conn.execute("RELEASE step")
            self._end(group, wait=False)
        else:  # SQLite rolled the whole transaction back: the group is lost
            self._lose(group, exc)

    def _keep_step(self, conn: sqlite3.Connection, group: int) -> None:
        if self._members > 1:
            conn.execute("RELEASE step")
        self._end(group, wait=True)

    def _begin(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        if self._group:
            return self._conn
        for attempt in range(50):  # another process holds the lock past busy_timeout
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.01 * (attempt + 1))
        self._last += 1
        self._group, self._members = self._last, 0
        return self._conn

    def _hand_on(self) -> None:
        with self._cond:
            self._using = False
            self._free.notify()

    def _end(self, group: int, wait: bool) -> None:
        """Leave the group open to a waiting thread, or commit it; with `wait`,
        return once the group is committed (raise if its commit failed)."""
        with self._cond:
            if self._waiting and self._members < MAX_GROUP:
                self._using = False
                self._free.notify()
                while wait and self._committed < group and group not in self._failed:
                    self._done.wait()
                self._raise_if_failed(group, wait)
                return
        assert self._conn is not None
        failure = None
        try:
            self._conn.execute("COMMIT")
        except BaseException as exc:  # noqa: B036 -- every caller in the group is told
            failure = exc
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        with self._cond:
            self._group = 0
            if failure is None:
                self._committed = group
            else:
                self._failed[group] = failure
            self._using = False
            self._close_if_asked()
            self._done.notify_all()
            self._free.notify()
        if failure is not None and wait:
            raise failure

    def _close_group(self) -> None:
        """The group's first transaction failed and was rolled back: no group, no
        caller waits for it."""
        with self._cond:
            self._group = 0
            self._using = False
            self._close_if_asked()
            self._free.notify()

    def _lose(self, group: int, exc: BaseException) -> None:
        with self._cond:
            self._group = 0
            self._failed[group] = exc
            self._using = False
            self._close_if_asked()
            self._done.notify_all()
            self._free.notify()

    def _raise_if_failed(self, group: int, wait: bool) -> None:
        failure = self._failed.get(group)
        if len(self._failed) > 100:  # those still waiting have seen theirs by now
            self._failed = {group: failure} if failure is not None else {}
        if failure is not None and wait:
            raise failure

    def close(self) -> None:
        """Close the connection now, or when the group open on it ends.

        Between two members of a group nobody uses the connection, but the
        transaction on it is still open: closing it then would roll back the
        members that already ran, and the next member would go on on a new
        connection outside any transaction.
        """
        with self._cond:
            self._close_when_done = True
            if not self._using and not self._group:
                self._close_if_asked()

    def _close_if_asked(self) -> None:
        if self._close_when_done and self._conn is not None:
            self._conn.close()
            self._conn = None
        self._close_when_done = False

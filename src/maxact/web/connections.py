"""The viewer's connections: idle ones wait in one selector thread, ready ones go to a bounded set
of worker threads.

The standard library's ``ThreadingHTTPServer`` gives every connection a thread for its whole life
and never closes an idle one, so 1,500 idle keep-alive sockets were 1,500 threads. Here a
connection holds a worker only while it has bytes to read: when it falls idle it goes back to the
watcher (one ``selectors`` loop), which hands it to a worker when the next request arrives and
closes it after ``idle_timeout_s`` without one. Threads: the watcher plus at most ``workers``.
HTTP-agnostic: a connection is anything with ``fileno``, ``serve_ready`` and ``close``.
"""

from __future__ import annotations

import queue
import selectors
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from typing import Protocol


class Connection(Protocol):
    def fileno(self) -> int: ...

    def serve_ready(self) -> bool:
        """Answer the request(s) that have arrived; True to keep the connection open (idle)."""

    def close(self) -> None: ...


class ConnectionPool:
    """Watches idle connections, serves ready ones on at most ``workers`` threads, closes the idle."""

    def __init__(self, workers: int, idle_timeout_s: float, name: str = "maxact-viewer"):
        self.workers = workers
        self.idle_timeout_s = idle_timeout_s
        self.name = name
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._incoming: queue.SimpleQueue[Connection] = queue.SimpleQueue()  # to watch
        self._ready: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()  # to serve
        self._idle: OrderedDict[Connection, float] = OrderedDict()  # watched, oldest first -> deadline
        self._shed = 0  # idle connections to close now (the process ran out of file descriptors)
        self._idle_workers = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closing = False
        self._watcher = threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True)
        self._watcher.start()

    # ---- called from any thread ------------------------------------------------------------
    def add(self, conn: Connection) -> None:
        """A new connection: watched until its first request arrives."""
        self._incoming.put(conn)
        self._wake()

    def shed_idle(self, n: int) -> None:
        """Close the ``n`` longest-idle connections (to free file descriptors)."""
        self._shed = max(self._shed, n)
        self._wake()

    def close(self) -> None:
        """Stop watching; close every idle connection; busy ones close when their answer is sent."""
        self._closing = True
        self._wake()
        self._watcher.join(timeout=5)
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
        while True:
            try:
                self._incoming.get_nowait().close()
            except queue.Empty:
                break
        for _ in self._threads:
            self._ready.put(None)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):  # a wake-up is already pending, or the pool is closed
            pass

    # ---- workers ---------------------------------------------------------------------------
    def _dispatch(self, conn: Connection) -> None:
        self._ready.put(conn)
        if self._idle_workers.acquire(blocking=False):
            return
        with self._lock:
            if len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()

    def _work(self) -> None:
        while True:
            conn = self._ready.get()
            if conn is None:
                return
            try:
                keep = conn.serve_ready()
            except (ConnectionError, TimeoutError):  # the client went away or stalled: nothing to say
                keep = False
            except Exception:  # noqa: BLE001 - a bug: the terminal gets the traceback, the loop goes on
                traceback.print_exc(file=sys.stderr)
                keep = False
            if keep and not self._closing:
                self.add(conn)
            else:
                conn.close()
            self._idle_workers.release()

    # ---- the watcher -----------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._closing:
            timeout = None
            if self._idle:
                timeout = max(0.0, next(iter(self._idle.values())) - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    self._drain_wake()
                    continue
                self._selector.unregister(key.fileobj)
                del self._idle[key.data]
                self._dispatch(key.data)
            now = time.monotonic()
            self._take_incoming(now + self.idle_timeout_s)
            while self._idle and (self._shed > 0 or next(iter(self._idle.values())) <= now):
                self._shed = max(0, self._shed - 1)
                conn, _ = self._idle.popitem(last=False)
                self._forget(conn)
            self._shed = 0

    def _take_incoming(self, deadline: float) -> None:
        while True:
            try:
                conn = self._incoming.get_nowait()
            except queue.Empty:
                return
            try:
                self._selector.register(conn, selectors.EVENT_READ, conn)
            except (ValueError, OSError):  # closed meanwhile
                conn.close()
                continue
            self._idle[conn] = deadline

    def _forget(self, conn: Connection) -> None:
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError, OSError):
            pass
        conn.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

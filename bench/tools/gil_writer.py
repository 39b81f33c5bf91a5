"""What a SQLite write transaction costs on a thread while another thread runs Python.

Why: ``sailseg serve`` ingest runs its event loop and its SQLite writer thread in lockstep
(the loop parses a round of requests, then the writer commits them while the loop waits).
Overlapping the two looks like a free gain, but the writer needs the GIL back after every
``sqlite3_step``, and ``executemany`` steps once per row. This measures one transaction of
ROWS rows (a random-key index, WAL, synchronous=FULL) three ways: alone; with a second thread
running Python that releases the GIL twice every ~10 us (a socket pair, as the event loop
does); and the same with every row passed in ONE statement through ``json_each`` (one step
per statement). bench/README.md ("Ingest: why the writer stays in lockstep") has the
figures and what they mean for the writer.

    python3 bench/tools/gil_writer.py [ROWS] [TRANSACTIONS]
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

Rows = list[tuple[str, str]]


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v TEXT)")
    conn.execute("CREATE INDEX t_k ON t (k)")
    return conn


def per_row(conn: sqlite3.Connection, rows: Rows) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t (k, v) VALUES (?, ?)", rows)
    conn.execute("COMMIT")


def one_statement(conn: sqlite3.Connection, rows: Rows) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t (k, v) SELECT value ->> 0, value ->> 1 FROM json_each(?)",
                 (json.dumps(rows),))
    conn.execute("COMMIT")


def busy(stop: threading.Event, loops: list[int]) -> None:
    """Python work with a GIL release every few microseconds, like an event loop serving."""
    a, b = socket.socketpair()
    n = 0
    while not stop.is_set():
        x = 0
        for i in range(300):
            x += i
        a.send(b"x")
        b.recv(16)
        n += 1
    loops.append(n)


def measure(write: Callable[[sqlite3.Connection, Rows], None], contended: bool, rows_n: int,
            txs: int) -> tuple[float, float]:
    """Median wall ms per transaction and the writer thread's CPU ms per transaction."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = connect(os.path.join(tmp, "w.db"))
        stop, loops = threading.Event(), []
        other = threading.Thread(target=busy, args=(stop, loops))
        if contended:
            other.start()
        walls: list[float] = []
        cpu = 0.0
        try:
            for _ in range(txs):
                rows = [(uuid.uuid4().hex, "x" * 200) for _ in range(rows_n)]
                t0, c0 = time.perf_counter(), time.thread_time()
                write(conn, rows)
                cpu += time.thread_time() - c0
                walls.append(time.perf_counter() - t0)
        finally:
            stop.set()
            if contended:
                other.join()
            conn.close()
    walls.sort()
    return walls[len(walls) // 2] * 1e3, cpu / txs * 1e3


def main() -> None:
    rows_n = int(sys.argv[1]) if len(sys.argv) > 1 else 320  # ~64 accepts x 5 rows
    txs = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    print(f"{rows_n} rows per transaction, {txs} transactions (SQLite {sqlite3.sqlite_version})")
    print("| statement | other thread | wall ms per tx (median) | writer CPU ms per tx |")
    print("|---|---|---|---|")
    for name, write in (("executemany (a step per row)", per_row),
                        ("json_each (a step per statement)", one_statement)):
        for contended in (False, True):
            wall, cpu = measure(write, contended, rows_n, txs)
            print(f"| {name} | {'busy' if contended else 'idle'} | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()

"""Storage faults through the real server (issue 18 item 5): a full disk under SQLite, a
dropped database and revoked privileges under PostgreSQL.

What must hold in each: ingest answers 503 with Retry-After (never 500, never 200 for an
event that was not stored), ``/readyz`` answers 503 while the store cannot commit, and both
come back without a restart once storage returns; every acknowledged event is delivered.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sailseg.testing.processes import echo_payloads, free_port, spawn_sailseg, wait_http

CONFIG = """
[store]
url = "{url}"
[server]
store_probe_interval = 0.3
[delivery]
poll_interval = 0.05
backoff_base = 0.05
backoff_max = 0.5
[triggers.web]
type = "echo"
path = "/in"
[pipelines.main]
trigger = "web"
sinks = [ {{ type = "echo", name = "rec", file = "{out}" }} ]
"""


class Node:
    """One ``sailseg serve`` process with an echo trigger at /in and an echo sink."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        self.out = tmp / "out.jsonl"
        self.port = free_port()
        cfg = tmp / "sailseg.toml"
        cfg.write_text(CONFIG.format(url=url, out=self.out))
        self.log = tmp / "serve.log"
        self.proc = spawn_sailseg(["serve", "-c", str(cfg), "--port", str(self.port)], self.log,
                                  cwd=tmp)
        self.base = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base, timeout=10)
        self.acked: list[str] = []
        self.statuses: list[int] = []
        wait_http(f"{self.base}/readyz", self.proc, 30, ok_below=300)

    def post(self, mid: str, size: int = 200) -> httpx.Response:
        r = self.client.post("/in", json={"type": "track", "userId": f"u{len(self.statuses) % 7}",
                                          "event": "E", "messageId": mid,
                                          "properties": {"pad": "x" * size}})
        self.statuses.append(r.status_code)
        if r.status_code == 200:
            self.acked.append(mid)
        return r

    def ready(self) -> int:
        return self.client.get("/readyz").status_code

    def wait_ready(self, want: int, timeout: float) -> float:
        """Seconds until /readyz answered ``want``; fails after ``timeout``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.ready() == want:
                return time.monotonic() - t0
            time.sleep(0.1)
        raise AssertionError(f"/readyz did not answer {want} within {timeout} s; "
                             f"log tail: {self.log.read_text()[-2000:]}")

    def delivered(self) -> set[str]:
        return {p["messageId"] for p in echo_payloads(self.out)}

    def wait_delivered(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not ids <= self.delivered():
            time.sleep(0.1)
        missing = ids - self.delivered()
        assert not missing, f"{len(missing)} acknowledged events never delivered: {sorted(missing)[:5]}"

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def assert_refused(r: httpx.Response) -> None:
    """A store failure is a 503 a sender retries, with Retry-After, never a 500."""
    assert r.status_code == 503, (r.status_code, r.text)
    assert int(r.headers["retry-after"]) >= 1
    assert "store could not commit" in r.json()["error"]


# -- SQLite on a full filesystem ------------------------------------------------------------
class FullDisk:
    """Fills (and frees) the filesystem the store lives on.

    A small tmpfs mounted for the test when we may mount (root with CAP_SYS_ADMIN, as in CI's
    container and here); otherwise the serving process's RLIMIT_FSIZE is set to 0 from
    outside (``prlimit``), so no file of it can grow: the same ENOSPC-like failure
    (EFBIG) at the same places, without privileges.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mnt = root / "disk"
        self.mnt.mkdir()
        self.mounted = False
        if os.geteuid() == 0 and shutil.which("mount"):
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(self.mnt)],
                               check=False, capture_output=True)
            self.mounted = r.returncode == 0
        self.pid = 0

    @property
    def kind(self) -> str:
        return "tmpfs" if self.mounted else "rlimit"

    def fill(self) -> None:
        if not self.mounted:
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
            return
        chunk = b"\0" * 65536
        sizes = {p.name: p.stat().st_size for p in self.mnt.iterdir()}
        try:
            with open(self.mnt / "filler", "wb") as fh:
                while True:
                    fh.write(chunk)
                    fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, (exc, sizes)
        with contextlib.suppress(OSError), open(self.mnt / "filler2", "wb") as fh:
            while True:  # the last few bytes too
                fh.write(b"\0" * 512)
                fh.flush()

    def free(self) -> None:
        if not self.mounted:
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            return
        for name in ("filler", "filler2"):
            with contextlib.suppress(FileNotFoundError):
                (self.mnt / name).unlink()

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mnt)], check=False)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[FullDisk]:
    disk = FullDisk(tmp_path)
    try:
        yield disk
    finally:
        disk.close()


def test_sqlite_full_disk_503_then_recovers(tmp_path: Path, full_disk: FullDisk) -> None:
    node = Node(tmp_path, f"sqlite:///{full_disk.mnt}/s.db")
    full_disk.pid = node.proc.pid
    try:
        for i in range(20):
            assert node.post(f"before-{i}").status_code == 200
        full_disk.fill()
        # the WAL may still have room for a few commits; then every commit fails
        refused = None
        for i in range(3000):
            r = node.post(f"full-{i}", size=2000)
            if r.status_code != 200:
                refused = r
                break
        assert refused is not None, f"every post was acknowledged on a full disk ({full_disk.kind})"
        assert_refused(refused)
        node.wait_ready(503, 10)
        body = node.client.get("/readyz").json()
        assert "store cannot commit" in body["error"], body
        for i in range(5):  # still refused, and still not a 500
            assert_refused(node.post(f"still-full-{i}", size=2000))
        full_disk.free()
        node.wait_ready(200, 15)  # no restart
        for i in range(20):
            r = node.post(f"after-{i}")
            assert r.status_code == 200, r.text
        assert 500 not in node.statuses
        node.wait_delivered(set(node.acked), 30)
        assert node.proc.poll() is None
    finally:
        node.stop()


# -- PostgreSQL: the database dropped and re-created, the role's privileges revoked ------------
def _pg_admin_dsn() -> str:
    dsn = os.environ.get("SAILSEG_TEST_POSTGRES_DSN")
    if not dsn:
        pytest.skip("SAILSEG_TEST_POSTGRES_DSN is not set (PostgreSQL tests need a server)")
    return dsn


def _with_db(dsn: str, db: str, user: str | None = None) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rsplit('@', 1)[-1]}"
    return urlunsplit((parts.scheme, netloc, f"/{db}", "", ""))


def pg(dsn: str, *statements: str) -> None:
    """Run statements on ``dsn`` as the admin, outside a transaction."""
    import anyio
    import asyncpg  # type: ignore[import-untyped]

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    anyio.run(run)


def migrate(url: str) -> None:
    import anyio

    from sailseg.store.postgres import PostgresStore

    async def run() -> None:
        store = PostgresStore(url)
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()

    anyio.run(run)


class Loader:
    """Posts events one after another from a thread, recording when each was acknowledged."""

    def __init__(self, node: Node, senders: int = 8) -> None:
        import threading

        self.node = node
        self.acks: list[tuple[str, float]] = []  # (messageId, monotonic time of the 200)
        self.sent: dict[str, float] = {}
        self.bodies: dict[str, str] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True)
                        for n in range(senders)]
        for t in self.threads:
            t.start()

    def run(self, sender: int) -> None:
        i = 0
        with httpx.Client(base_url=self.node.base, timeout=15) as client:
            while not self.stop.is_set():
                mid = f"load-{sender}-{i}"
                i += 1
                self.sent[mid] = time.monotonic()
                try:
                    r = client.post("/in", json={"type": "track", "userId": f"u{i % 5}",
                                                 "event": "E", "messageId": mid})
                except httpx.HTTPError:
                    continue
                self.node.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.acks.append((mid, time.monotonic()))
                    self.bodies[mid] = r.text
                else:
                    time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(20)


@pytest.fixture
def pg_db() -> Iterator[tuple[str, str]]:
    """(admin DSN, name) of a throw-away, migrated database."""
    admin = _pg_admin_dsn()
    name = f"sailseg_h11_t{uuid.uuid4().hex[:10]}"
    pg(admin, f"CREATE DATABASE {name}")
    migrate(_with_db(admin, name))
    try:
        yield admin, name
    finally:
        pg(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def fetch_keys(dsn: str) -> set[str]:
    """The messageIds a database holds (its dedupe keys, written in the enqueue's own
    transaction), or an empty set when it does not exist."""
    import anyio
    import asyncpg

    async def run() -> set[str]:
        try:
            conn = await asyncpg.connect(dsn)
        except asyncpg.InvalidCatalogNameError:
            return set()
        try:
            return {r[0].split(":", 1)[1] for r in await conn.fetch("SELECT key FROM sailseg_dedupe")}
        finally:
            await conn.close()

    return anyio.run(run)


def cut_off(admin: str, name: str, rename_to: str | None) -> None:
    """The database leaves: DROP ... WITH (FORCE), or (to keep its rows for inspection) the
    same steps by hand: refuse new connections, end the sessions, rename it."""
    if rename_to is None:
        pg(admin, f"DROP DATABASE {name} WITH (FORCE)")
        return
    pg(admin, f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    deadline = time.monotonic() + 10
    while True:
        pg(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        try:
            pg(admin, f"ALTER DATABASE {name} RENAME TO {rename_to}")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.reliability
@pytest.mark.parametrize("how", ["drop", "rename"])
def test_postgres_database_gone_and_recreated(tmp_path: Path, pg_db: tuple[str, str],
                                              how: str) -> None:
    """``drop``: DROP DATABASE WITH (FORCE) under load; ``rename``: the same cut-off, but the
    old database is kept, so every acknowledged event can be looked up where it went."""
    admin, name = pg_db
    url = _with_db(admin, name)
    gone = f"{name}_gone" if how == "rename" else None
    node = Node(tmp_path, url)
    loader = Loader(node)
    try:
        time.sleep(1.0)
        t_drop = time.monotonic()
        cut_off(admin, name, gone)
        t_dropped = time.monotonic()
        node.wait_ready(503, 10)
        time.sleep(1.0)
        pg(admin, f"CREATE DATABASE {name}")
        migrate(url)
        node.wait_ready(200, 20)
        n_before = len(loader.acks)
        deadline = time.monotonic() + 10
        while len(loader.acks) < n_before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loader.finish()
    try:
        assert 500 not in node.statuses
        assert 503 in node.statuses
        acked = {m for m, _ in loader.acks}
        # sent once the database was gone: stored in the new one, or refused (503)
        later = {m for m in acked if loader.sent[m] >= t_dropped}
        assert len(later) >= 20
        missing = later - fetch_keys(url)
        assert not missing, f"acknowledged but not in the re-created database: {sorted(missing)[:5]}"
        node.wait_delivered(later, 30)
        if gone is not None:  # every acknowledged event is in one of the two databases
            pg(admin, f"ALTER DATABASE {gone} ALLOW_CONNECTIONS true")
            old = fetch_keys(_with_db(admin, gone))
            lost = acked - old - fetch_keys(url)
            assert not lost, f"acknowledged but in neither database: {sorted(lost)[:5]}"
            late = [(m, round(t - t_drop, 3)) for m, t in loader.acks if t >= t_drop and m in old]
            print(f"acknowledged after the cut-off began, stored in the old database: {late}")
    finally:
        node.stop()
        if gone is not None:
            pg(admin, f"DROP DATABASE IF EXISTS {gone} WITH (FORCE)")


def test_postgres_privileges_revoked_then_granted(tmp_path: Path, pg_db: tuple[str, str]) -> None:
    admin, name = pg_db
    role = f"sailseg_h11_r{uuid.uuid4().hex[:8]}"
    db_admin = _with_db(admin, name)
    grant = f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
    pg(admin, f"CREATE ROLE {role} LOGIN")
    node = None
    try:
        pg(db_admin, f"GRANT CONNECT ON DATABASE {name} TO {role}", grant)
        node = Node(tmp_path, _with_db(admin, name, user=role))
        for i in range(10):
            assert node.post(f"before-{i}").status_code == 200
        pg(db_admin, f"REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public FROM {role}")
        assert_refused(node.post("revoked-0"))
        node.wait_ready(503, 10)
        assert "InsufficientPrivilege" in node.client.get("/readyz").json()["error"]
        for i in range(1, 4):
            assert_refused(node.post(f"revoked-{i}"))
        pg(db_admin, grant)
        node.wait_ready(200, 15)  # no restart
        for i in range(10):
            assert node.post(f"after-{i}").status_code == 200
        assert 500 not in node.statuses
        assert not {m for m in node.acked if m.startswith("revoked")}
        node.wait_delivered(set(node.acked), 30)
    finally:
        if node is not None:
            node.stop()
        pg(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE {role}")

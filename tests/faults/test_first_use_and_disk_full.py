"""The database's edges: many threads using a fresh database at once, and a disk that fills up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from conveyor import Conveyor

ROOT = Path(__file__).resolve().parents[2]


def test_twenty_threads_using_a_fresh_database_at_once_all_succeed(database_url: str) -> None:
    app = Conveyor(database_url)

    @app.job()
    def task(p: dict) -> None:  # type: ignore[type-arg]
        return None

    start = threading.Barrier(20)
    errors: list[BaseException] = []
    ids: list[int] = []

    def first_call(n: int) -> None:
        start.wait()
        try:
            if n % 2 == 0:
                app.admin.jobs.count()  # a read first: half the threads read, half write
            ids.append(app.enqueue("task", {"n": n}))
        except BaseException as exc:  # noqa: BLE001 (collected and asserted on below)
            errors.append(exc)

    threads = [threading.Thread(target=first_call, args=(n,)) for n in range(20)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert len(set(ids)) == 20
        assert app.admin.jobs.count() == 20
    finally:
        app.close()


DISK_FULL = textwrap.dedent(
    """
    import os, resource, signal, sys
    from conveyor import Conveyor
    from conveyor.errors import ConveyorError

    app = Conveyor(sys.argv[1])
    app.job("task")(lambda p: None)
    app.enqueue("task", {"warm": 1})
    wal = sys.argv[1].removeprefix("sqlite:///") + "-wal"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(wal) + 8192, resource.RLIM_INFINITY))
    try:
        app.enqueue("task", {"blob": "x" * 600_000})
    except ConveyorError as exc:
        print("conveyor", type(exc).__name__, exc)
    except BaseException as exc:
        print("raw", type(exc).__module__, type(exc).__name__, exc)
    else:
        print("stored")
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print("after", app.admin.jobs.count(), app.enqueue("task", {"small": 1}) > 0)
    """
)


def test_a_commit_that_fails_on_a_full_disk_is_a_backend_error(sqlite_url: str) -> None:
    """SQLite writes a transaction's pages to the WAL at COMMIT, so a full disk fails the COMMIT
    itself (PostgreSQL's driver errors all pass through one translation already). A real limit on
    the file size of a child process (RLIMIT_FSIZE) plays the full disk."""
    out = subprocess.run([sys.executable, "-c", DISK_FULL, sqlite_url], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("conveyor BackendError SQLite: could not commit"), out.stdout
    assert lines[1] == "after 1 True", out.stdout  # nothing half-written; the database works once there is room

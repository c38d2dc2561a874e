"""Faults: prove with real processes that jobs are neither lost nor run twice at once when things break.

    python bench/faults.py --backend sqlite|postgres [--quick] [--outage restart|proxy] [--only NAME] [--examples N]

Scenarios (docs/faults.md says what each proves):
  outage     PostgreSQL goes away for a few seconds while 4 worker processes drain jobs and the
             shop takes orders over HTTP (``--outage restart``: pg_ctlcluster restart, the default;
             ``--outage proxy``: a TCP proxy cuts and refuses connections). SQLite: the shop and
             4 workers write at once and no "database is locked" reaches anyone.
  hostile    handlers that os._exit, hang (async and sync), eat memory, or raise an exception
             whose str() raises, among 500 normal jobs.
  corrupt    job rows corrupted in the database while others flow.
  skew       two workers whose clocks are 30 s fast and 30 s slow, jobs and a cron every second.
  poison     the standing property of bench/poison.py: hypothesis draws handlers that raise, return,
             snooze, retry after, enqueue children and report progress with hostile values among
             ordinary jobs, for ``--examples`` rounds (100; 3 with --quick), shrinking a failure.

The last line printed is one JSON object with, per scenario, jobs, lost, overlapping_runs and
pass; the exit status is non-zero if any scenario failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos import fresh_database, overlaps, query
from bench.outage_proxy import OutageProxy, free_port
from conveyor import Conveyor, JobState

APP = "bench.faults_app:app"
HOSTILE = ("exit_process", "hang_async", "hang_sync", "eat_memory", "hostile_str")  # as in bench/faults_app.py
EXPECTED_REASON = {
    "exit_process": "worker lost",
    "hang_async": "timed out",
    "hang_sync": "timed out",
    "eat_memory": "MemoryError",
    "hostile_str": "HostileError",
}


# -- processes -----------------------------------------------------------------------------


class Processes:
    """The worker and web processes of one scenario, each logging to its own file."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.logs / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def workers(self, name: str, env: dict[str, str], processes: int, concurrency: int = 10) -> None:
        argv = [sys.executable, "-m", "conveyor", "worker", APP, "--processes", str(processes), "--concurrency", str(concurrency)]
        self.start(name, argv, env)

    def stop(self, grace: float = 40.0) -> dict[str, int | None]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + grace
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[name] = proc.wait()
        return codes

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def base_env(url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CONVEYOR_DATABASE_URL": url,
        "DATABASE_URL": url,
        "CONVEYOR_POLL_INTERVAL": "0.1",
        "CONVEYOR_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def prepare(url: str) -> Conveyor:
    """Migrated queue, evidence tables, and a client that knows the bench's job types."""
    os.environ["CONVEYOR_DATABASE_URL"] = url
    client = Conveyor(url)
    client.backend.migrate()
    import bench.faults_app as bench_app

    for statement in bench_app.CREATE[client.backend.flavour]:  # type: ignore[attr-defined]
        query(url, statement)

    for spec in bench_app.app.registry:
        o = spec.options
        client.job(name=spec.name, queue=o.queue, max_attempts=o.max_attempts, backoff=o.backoff, timeout=o.timeout)(spec.func)
    return client


def wait_for(check: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception:  # the database may be away (outage scenario): look again
            pass
        time.sleep(interval)
    return False


def run_evidence(url: str) -> tuple[list[tuple[int, int, float, float | None]], dict[int, float]]:
    runs = [(int(r[0]), int(r[1]), float(r[2]), None if r[3] is None else float(r[3])) for r in query(url, "SELECT job_id, pid, started, ended FROM faults_runs")]
    deaths = {int(pid): float(at) for pid, at in query(url, "SELECT pid, at FROM faults_deaths")}
    return runs, deaths


def duplicates(runs: list[tuple[int, int, float, float | None]], ids: set[int] | None = None) -> int:
    per_job = Counter(job_id for job_id, *_ in runs if ids is None or job_id in ids)
    return sum(n - 1 for n in per_job.values() if n > 1)


# -- 1. the database goes away under load -------------------------------------------------


class OrderTraffic:
    """Clients placing orders over HTTP until stopped; every answer is kept."""

    def __init__(self, base: str, clients: int = 2) -> None:
        self.base = base
        self.answers: list[tuple[float, int, dict[str, Any]]] = []  # (time, status, body)
        self.errors: list[str] = []  # transport errors (no answer at all)
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(n,), daemon=True) for n in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _loop(self, n: int) -> None:
        import httpx

        with httpx.Client(base_url=self.base, timeout=60) as client:
            i = 0
            while not self.stopping.is_set():
                i += 1
                body = {"user_id": f"u{n}-{i % 5}", "email": f"c{n}.{i}@example.com", "payment_token": "tok_visa",
                        "items": [{"product_id": "prod-1", "quantity": 1}, {"product_id": "prod-2", "quantity": 2}]}
                try:
                    answer = client.post("/orders", json=body)
                    self.answers.append((time.time(), answer.status_code, answer.json()))
                except Exception as exc:  # counted: a user would have seen this
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.1)
                time.sleep(0.02)


def start_shop(procs: Processes, url: str, data: Path) -> str:
    """Migrate the shop's tables, give it plenty of stock, start its web process; return its URL."""
    from examples.shop.config import ShopConfig
    from examples.shop.db import ShopDB
    from examples.shop.jobs import create_shop

    shop = create_shop(ShopConfig.from_env({"DATABASE_URL": url, "SHOP_DATA_DIR": str(data)}))
    ShopDB(shop.app).migrate()
    shop.app.close()
    query(url, "UPDATE shop_products SET stock = 100000000")  # orders test the database, not the stock
    port = free_port()
    env = base_env(url, SHOP_DATA_DIR=str(data), SHOP_PAYMENT_LATENCY="0.01")
    procs.start("web", [sys.executable, "-m", "uvicorn", "examples.shop.api:create_api", "--factory", "--host", "127.0.0.1",
                        "--port", str(port), "--log-level", "warning"], env)
    import httpx

    base = f"http://127.0.0.1:{port}"
    if not wait_for(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, 60, 0.1):
        raise RuntimeError(f"the shop did not start: {procs.log('web')[-2000:]}")
    return base


def restart_postgres(seconds: float) -> None:
    """The real thing: stop the cluster, keep it down ``seconds``, start it (pg_ctlcluster)."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "fast"], check=True)
    time.sleep(seconds)
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True)


def orders_consistency(url: str) -> dict[str, int]:
    """Every paid order has its whole job graph; nothing half-saved either way."""
    rows = query(url, "SELECT o.id, o.status, (SELECT count(*) FROM conveyor_jobs j WHERE j.workflow_id = o.id) FROM shop_orders o")
    paid = [r for r in rows if r[1] != "declined"]
    per_order = Counter(int(r[2]) for r in paid)
    orphans = query(url, "SELECT count(*) FROM conveyor_jobs j WHERE j.workflow_id IS NOT NULL AND j.queue <> 'faults' "
                         "AND NOT EXISTS (SELECT 1 FROM shop_orders o WHERE o.id = j.workflow_id)")[0][0]
    expected = max(per_order, key=lambda k: per_order[k]) if per_order else 0
    return {"orders": len(paid), "jobs_per_order": expected, "half_saved": sum(n for k, n in per_order.items() if k != expected or k == 0),
            "orphan_jobs": int(orphans)}


def scenario_outage(backend: str, quick: bool, mode: str, logs: Path) -> dict[str, Any]:
    jobs = 1000 if quick else 10_000
    url, drop = fresh_database(backend)
    procs = Processes(logs)
    proxy: OutageProxy | None = None
    client = prepare(url)
    outage_seconds = 2.0 if quick else 5.0
    try:
        client.enqueue_many([("record", {"n": i, "sleep": 0.002}) for i in range(jobs)], queue="faults")
        reach = url
        if backend == "postgres" and mode == "proxy":
            proxy = OutageProxy(("127.0.0.1", 5432)).start()
            reach = proxy.url(url)
        data = Path(tempfile.mkdtemp(prefix="conveyor-faults-shop-"))
        shop = start_shop(procs, reach, data)
        traffic = OrderTraffic(shop)
        traffic.start()
        procs.workers("workers", base_env(reach), 4)
        started = time.monotonic()
        outage: tuple[float, float] | None = None
        if backend == "postgres":
            wait_for(lambda: client.admin.jobs.count(state=JobState.COMPLETED) >= jobs // 5, 120, 0.05)
            began = time.time()
            if proxy is not None:
                proxy.outage(outage_seconds)
            else:
                restart_postgres(outage_seconds)
            outage = (began, time.time())
        else:
            time.sleep(1.0)
        done = wait_for(lambda: client.admin.jobs.count(state=JobState.COMPLETED) >= jobs, 600 if not quick else 120)
        time.sleep(1.0 if quick else 2.0)  # orders keep coming a little after the drain
        traffic.stop()
        elapsed = time.monotonic() - started
        codes = procs.stop()
        completed = client.admin.jobs.count(state=JobState.COMPLETED)
        dead = client.admin.jobs.count(state=JobState.DEAD, queue="faults")
        runs, deaths = run_evidence(url)
        statuses = Counter(status for _, status, _ in traffic.answers)
        unavailable = [body for _, status, body in traffic.answers if status == 503]
        placed = [body["id"] for _, status, body in traffic.answers if status == 201]
        stored = {r[0] for r in query(url, "SELECT id FROM shop_orders")}
        consistency = orders_consistency(url)
        worker_log = procs.log("workers")
        result: dict[str, Any] = {
            "jobs": jobs,
            "completed": completed,
            "dead": dead,
            "lost": jobs - completed - dead,
            "runs": len(runs),
            "duplicate_runs": duplicates(runs),
            "overlapping_runs": overlaps(runs, deaths),
            "seconds": round(elapsed, 1),
            "drained": done,
            "http_answers": dict(sorted((str(k), v) for k, v in statuses.items())),
            "http_transport_errors": len(traffic.errors),
            "orders_acknowledged": len(placed),
            "acknowledged_but_missing": len(set(placed) - stored),
            **{f"orders_{k}": v for k, v in consistency.items()},
            "worker_exit": codes.get("workers"),
            "worker_log_warnings": sum(1 for line in worker_log.splitlines() if " WARNING " in line),
            "locked_in_logs": worker_log.count("database is locked") + procs.log("web").count("database is locked"),
        }
        if outage is not None:
            result["outage"] = mode
            result["outage_seconds"] = round(outage[1] - outage[0], 1)
            result["answers_503_clear"] = all(b.get("error") == "database unavailable" for b in unavailable)
            result["worker_logged_outage"] = any(w in worker_log for w in ("failed", "not reachable", "unavailable"))
        ok_http = all(s in (201, 503) for s in statuses) if backend == "postgres" else all(s == 201 for s in statuses)
        result["pass"] = bool(
            done and result["lost"] == 0 and result["overlapping_runs"] == 0 and dead == 0 and ok_http
            and not traffic.errors and result["acknowledged_but_missing"] == 0 and consistency["half_saved"] == 0
            and consistency["orphan_jobs"] == 0 and placed
            and (backend == "sqlite" and result["locked_in_logs"] == 0 and statuses.get(503, 0) == 0
                 or backend == "postgres" and result.get("answers_503_clear", True) and result.get("worker_logged_outage", False))
        )
        return result
    finally:
        procs.stop()
        if proxy is not None:
            proxy.stop()
        client.close()
        drop()


# -- 2. hostile handlers -------------------------------------------------------------------


def scenario_hostile(backend: str, quick: bool, logs: Path) -> dict[str, Any]:
    normal = 500
    url, drop = fresh_database(backend)
    procs = Processes(logs)
    client = prepare(url)
    try:
        from datetime import timedelta

        # the os._exit and half the normal jobs come 6 s later, so the other hostile handlers show
        # their own failure first instead of dying with the process, and normal work is in flight
        later = timedelta(seconds=6)
        half = normal // 2
        normal_ids = set(client.enqueue_many([("record", {"n": i, "sleep": 0.01}) for i in range(half)], queue="faults"))
        normal_ids |= set(client.enqueue_many([("record", {"n": i, "sleep": 0.01}) for i in range(half, normal)], queue="faults", delay=later))
        hostile_ids = {name: client.enqueue(name, {}, queue="faults", **({"delay": later} if name == "exit_process" else {})) for name in HOSTILE}
        env = base_env(url, CONVEYOR_LEASE_SECONDS="3", CONVEYOR_RESCUE_INTERVAL="0.5", CONVEYOR_MAX_MEMORY_MB="512")
        procs.workers("hostile-workers", env, 2)
        started = time.monotonic()

        def settled() -> bool:
            return (client.admin.jobs.count(state=JobState.COMPLETED, type="record") >= normal
                    and all(client.admin.jobs.get(i).state is JobState.DEAD for i in hostile_ids.values()))

        done = wait_for(settled, 180)
        elapsed = time.monotonic() - started
        procs.stop()
        runs, deaths = run_evidence(url)
        completed = client.admin.jobs.count(state=JobState.COMPLETED, type="record")
        reasons = {}
        for name, job_id in hostile_ids.items():
            job = client.admin.jobs.get(job_id)
            reasons[name] = {"state": job.state.value, "attempts": job.attempt, "reason": job.errors[-1].error if job.errors else None}
        # its own failure, or "worker lost" when a neighbour's os._exit took its process down mid-run
        readable = all(r["state"] == "dead" and r["reason"] and (EXPECTED_REASON[n] in r["reason"] or "worker lost" in r["reason"])
                       for n, r in reasons.items())
        lost = normal - completed + sum(1 for r in reasons.values() if r["state"] not in ("dead", "pending", "scheduled"))
        result = {
            "jobs": normal + len(hostile_ids),
            "completed": completed,
            "lost": lost,
            "overlapping_runs": overlaps([r for r in runs if r[0] in normal_ids], deaths),
            "duplicate_runs": duplicates(runs, normal_ids),
            "process_deaths": len(deaths),
            "hostile": reasons,
            "seconds": round(elapsed, 1),
        }
        result["pass"] = bool(done and lost == 0 and result["overlapping_runs"] == 0 and readable)
        return result
    finally:
        procs.stop()
        client.close()
        drop()


# -- 3. corrupt rows -----------------------------------------------------------------------


def scenario_corrupt(backend: str, quick: bool, logs: Path) -> dict[str, Any]:
    from datetime import timedelta

    normal, broken = 500, 10
    url, drop = fresh_database(backend)
    procs = Processes(logs)
    client = prepare(url)
    try:
        procs.workers("corrupt-workers", base_env(url), 2)
        broken_ids = [client.enqueue("record", {"n": -i}, queue="faults", delay=timedelta(seconds=2)) for i in range(broken)]
        with client.transaction() as tx:  # while they wait for their time, their rows are damaged
            for job_id in broken_ids:
                if backend == "sqlite":
                    tx.execute("UPDATE conveyor_jobs SET payload = '{not json' WHERE id = ?", (job_id,))
                else:  # jsonb holds only valid JSON: the worst is the wrong JSON type
                    tx.execute("UPDATE conveyor_jobs SET payload = '\"a string, not an object\"'::jsonb WHERE id = %s", (job_id,))
        client.enqueue_many([("record", {"n": i}) for i in range(normal)], queue="faults")
        started = time.monotonic()
        done = wait_for(lambda: client.admin.jobs.count(state=JobState.COMPLETED) >= normal and client.admin.jobs.count(state=JobState.DEAD) >= broken, 120)
        elapsed = time.monotonic() - started
        codes = procs.stop()
        runs, deaths = run_evidence(url)
        dead = [client.admin.jobs.get(i) for i in broken_ids]
        moved_aside = sum(1 for j in dead if j.state is JobState.DEAD and j.errors and "corrupt job row" in j.errors[-1].error)
        completed = client.admin.jobs.count(state=JobState.COMPLETED)
        result = {
            "jobs": normal + broken,
            "completed": completed,
            "moved_aside": moved_aside,
            "reason": dead[0].errors[-1].error if dead and dead[0].errors else None,
            "lost": normal - completed + broken - moved_aside,
            "overlapping_runs": overlaps(runs, deaths),
            "duplicate_runs": duplicates(runs),
            "worker_exit": codes.get("corrupt-workers"),
            "seconds": round(elapsed, 1),
        }
        result["pass"] = bool(done and result["lost"] == 0 and result["overlapping_runs"] == 0 and codes.get("corrupt-workers") == 0)
        return result
    finally:
        procs.stop()
        client.close()
        drop()


# -- 4. clock skew -------------------------------------------------------------------------


def scenario_skew(backend: str, quick: bool, logs: Path) -> dict[str, Any]:
    normal = 500
    watch = 4.0 if quick else 15.0
    url, drop = fresh_database(backend)
    procs = Processes(logs)
    client = prepare(url)
    try:
        ids = set(client.enqueue_many([("record", {"n": i, "sleep": 0.01}) for i in range(normal)], queue="faults"))
        for name, skew in (("fast", "30"), ("slow", "-30")):
            procs.workers(f"skew-{name}", base_env(url, FAULTS_CLOCK_SKEW=skew, FAULTS_CRON="1", CONVEYOR_LEASE_SECONDS="3"), 1)
        started = time.monotonic()
        done = wait_for(lambda: client.admin.jobs.count(state=JobState.COMPLETED, type="record") >= normal, 120)
        time.sleep(watch)  # the schedule keeps firing
        elapsed = time.monotonic() - started
        procs.stop()
        runs, deaths = run_evidence(url)
        ticks = client.admin.jobs.list(type="tick", limit=100_000)
        tick_ids = {j.id for j in ticks}
        keys = Counter(j.unique_key for j in ticks)
        believed = query(url, "SELECT pid, avg(clock - started) FROM faults_runs GROUP BY pid")
        completed = client.admin.jobs.count(state=JobState.COMPLETED, type="record")
        result = {
            "jobs": normal + len(ticks),
            "completed": completed,
            "lost": normal - completed,
            "overlapping_runs": overlaps(runs, deaths),
            "double_runs": duplicates(runs),
            "cron_fires": len(ticks),
            "cron_double_fires": sum(n - 1 for n in keys.values() if n > 1),
            "cron_ticks_run_twice": duplicates(runs, tick_ids),
            "worker_clock_offsets": sorted(round(float(offset)) for _, offset in believed),
            "seconds": round(elapsed, 1),
        }
        expected_fires = elapsed - 2  # every second while the workers ran, less their start-up
        result["pass"] = bool(
            done and result["lost"] == 0 and result["overlapping_runs"] == 0 and result["double_runs"] == 0
            and result["cron_double_fires"] == 0 and len(ticks) >= expected_fires * 0.8 and len(ticks) <= elapsed + 2
            and result["worker_clock_offsets"] == [-30, 30]
        )
        _ = ids
        return result
    finally:
        procs.stop()
        client.close()
        drop()


def scenario_poison(backend: str, quick: bool, logs: Path, examples: int | None) -> dict[str, Any]:
    from bench.poison import check

    url, drop = fresh_database(backend)
    try:
        rounds = check(url, examples or (3 if quick else 100), shrink=not quick)
    finally:
        drop()
    ordinary = sum(r["ordinary"] for r in rounds)
    return {"jobs": ordinary + sum(r["poisoned"] for r in rounds), "rounds": len(rounds), "ordinary": ordinary,
            "lost": 0, "overlapping_runs": 0, "pass": True}  # check() raises at the first round that breaks the property


SCENARIOS = ("outage", "hostile", "corrupt", "skew", "poison")


def run(backend: str, quick: bool, outage: str, only: list[str] | None = None, examples: int | None = None) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix=f"conveyor-faults-{backend}-"))
    results: dict[str, Any] = {"backend": backend, "quick": quick, "logs": str(logs)}
    for name in only or SCENARIOS:
        began = time.monotonic()
        try:
            if name == "outage":
                results[name] = scenario_outage(backend, quick, outage, logs)
            elif name == "poison":
                results[name] = scenario_poison(backend, quick, logs, examples)
            else:
                results[name] = {"hostile": scenario_hostile, "corrupt": scenario_corrupt, "skew": scenario_skew}[name](backend, quick, logs)
        except Exception as exc:  # a scenario that could not even run has failed, and says why
            results[name] = {"jobs": 0, "lost": None, "overlapping_runs": None, "pass": False, "error": f"{type(exc).__name__}: {exc}"}
        print(f"{name}: {json.dumps(results[name])} ({time.monotonic() - began:.0f} s)", file=sys.stderr, flush=True)
    results["pass"] = all(results[name]["pass"] for name in only or SCENARIOS)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--quick", action="store_true", help="fewer jobs and a shorter outage (the test suite's run)")
    parser.add_argument("--outage", choices=["restart", "proxy"], default="restart",
                        help="how PostgreSQL goes away: a real pg_ctlcluster restart, or a TCP proxy that cuts connections")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    parser.add_argument("--examples", type=int, help="poison: how many hypothesis rounds (default 100; 3 with --quick)")
    args = parser.parse_args()
    result = run(args.backend, args.quick, args.outage, args.only, args.examples)
    print(json.dumps(result))
    sys.exit(0 if result["pass"] else 1)


if __name__ == "__main__":
    main()

"""The package as users get it: built into a wheel and an sdist, installed in a fresh venv outside the checkout.

The rest of the suite runs from an editable install, which reads templates, static files and
migrations straight from the checkout, so a file the wheel forgot goes unnoticed there. Here
the wheel is installed with its extras into a new virtualenv in a temporary directory, and a
worker, the CLI, the admin API, the dashboard's pages and mypy (against a user's file) are run
from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conveyor.testing import wait_until
from tests.web.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DEV = Path(sys.executable).parent
NEEDED = ["conveyor/py.typed", "conveyor/web/static/conveyor.css", "conveyor/web/static/conveyor.js",
          "conveyor/web/templates/base.html", "conveyor/web/templates/login.html",
          "conveyor/backends/sqlite/migrations/0001_jobs.sql", "conveyor/backends/postgres/migrations/0001_jobs.sql"]

USER_JOBS = '''
import os
from pydantic import BaseModel
from conveyor import Conveyor, JobContext

app = Conveyor(os.environ["CONVEYOR_DATABASE_URL"], poll_interval=0.05)

class Greeting(BaseModel):
    name: str

@app.job(queue="default", max_attempts=2)
def greet(p: Greeting, ctx: JobContext) -> str:
    return "hello " + p.name
'''

TYPED_OK = '''
from conveyor import JobState
from userjobs import app
job_id: int = app.enqueue("greet", {"name": "typed"}, priority=5)
state: JobState = app.admin.jobs.get(job_id).state
'''
TYPED_WRONG = '''
from userjobs import app
job_id: str = app.enqueue(42)
'''


@dataclass(frozen=True)
class Installed:
    python: Path
    bin: Path
    home: Path  # outside the checkout: the user's project directory
    build_log: str


def run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would point Python back into the checkout or the dev venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(DEV)))
    return {**env, **extra}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel and sdist, built the way a release is (the wheel from the sdist, in isolation)."""
    out = tmp_path_factory.mktemp("dist")
    built = run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out)
    assert built.returncode == 0, built.stdout + built.stderr
    return out, built.stdout + built.stderr


@pytest.fixture(scope="module")
def installed(dist: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Installed:
    out, log = dist
    home = tmp_path_factory.mktemp("user")
    venv = home / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=home)
    assert made.returncode == 0, made.stderr
    wheel = next(out.glob("conveyor-*.whl"))
    # The dev venv's pip installs into the new venv (--python), so no pip is bootstrapped there.
    pip = run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", f"{wheel}[web,postgres]"], cwd=home)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    (home / "userjobs.py").write_text(USER_JOBS)
    return Installed(venv / "bin" / "python", venv / "bin", home, log)


def test_build_ships_every_file_without_deprecation_warnings(dist: tuple[Path, str]) -> None:
    out, log = dist
    warned = [line for line in log.splitlines() if "deprecat" in line.lower() and "deprecation.py" not in line]  # conveyor/deprecation.py is a module, not a warning
    assert not warned, log
    with zipfile.ZipFile(next(out.glob("conveyor-*.whl"))) as wheel:
        names = set(wheel.namelist())
    assert [n for n in NEEDED if n not in names] == []
    with tarfile.open(next(out.glob("conveyor-*.tar.gz"))) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert [n for n in NEEDED if n not in members] == []


def test_installed_wheel_is_used_not_the_checkout(installed: Installed) -> None:
    where = run([installed.python, "-c", "import conveyor; print(conveyor.__file__)"], cwd=installed.home, env=clean_env())
    assert where.returncode == 0, where.stderr
    assert str(installed.home / "venv") in where.stdout and str(ROOT) not in where.stdout


@pytest.fixture
def served(installed: Installed, database_url: str) -> Iterator[tuple[Installed, str, str]]:
    """The installed ``conveyor dashboard`` serving the user's app; yields (install, base URL, token)."""
    token = "packaging-test-token"
    port = free_port()
    env = clean_env(CONVEYOR_DATABASE_URL=database_url, CONVEYOR_ADMIN_TOKEN=token)
    migrated = run([installed.bin / "conveyor", "migrate"], cwd=installed.home, env=env)  # the CLI opens no database it did not make
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    server = subprocess.Popen(
        [str(installed.bin / "conveyor"), "dashboard", "--app", "userjobs:app", "--port", str(port)],
        cwd=installed.home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"the dashboard exited: {server.stdout.read() if server.stdout else ''}")
        try:
            return httpx.get(f"{base}/api/health", timeout=2).status_code in (200, 401, 503)
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=60, message="the installed dashboard to listen")
        yield installed, base, token
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_installed_wheel_runs_worker_cli_api_and_dashboard(served: tuple[Installed, str, str], database_url: str) -> None:
    installed, base, token = served
    env = clean_env(CONVEYOR_DATABASE_URL=database_url)
    enqueue = run([installed.python, "-c", "from userjobs import app; print(app.enqueue('greet', {'name': 'wheel'}))"],
                  cwd=installed.home, env=env)
    assert enqueue.returncode == 0, enqueue.stderr
    job_id = int(enqueue.stdout.split()[-1])
    worker = subprocess.Popen([str(installed.bin / "conveyor"), "worker", "userjobs:app", "--concurrency", "2"],
                              cwd=installed.home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        auth = {"authorization": f"Bearer {token}"}

        def done() -> bool:
            return httpx.get(f"{base}/api/jobs/{job_id}", headers=auth, timeout=5).json().get("state") == "completed"

        wait_until(done, timeout=60, message="the installed worker to run the job")
    finally:
        worker.terminate()
        assert worker.wait(60) == 0
    assert httpx.get(f"{base}/api/jobs/{job_id}", headers=auth, timeout=5).json()["result"] == "hello wheel"

    status = run([installed.bin / "conveyor", "status", "--json"], cwd=installed.home, env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["total"]["counts"]["completed"] == 1
    listed = run([installed.bin / "conveyor", "jobs", "--state", "completed", "--json"], cwd=installed.home, env=env)
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)] == [job_id]

    assert httpx.get(f"{base}/api/stats", headers=auth, timeout=10).status_code == 200
    with httpx.Client(base_url=base, timeout=10) as browser:
        login = browser.post("/login", data={"token": token, "next": "/"})
        assert login.status_code == 303
        for page in ("/", "/jobs", f"/jobs/{job_id}", "/dlq", "/cron", "/workflows", "/workers", "/audit"):
            answer = browser.get(page)
            assert answer.status_code == 200 and "<html" in answer.text, page
        assert browser.get("/static/conveyor.css").status_code == 200


def test_users_code_type_checks_against_the_installed_package(installed: Installed) -> None:
    """py.typed is shipped, so mypy reads Conveyor's annotations: a right call passes, a wrong payload fails."""
    (installed.home / "typed_ok.py").write_text(TYPED_OK)
    (installed.home / "typed_wrong.py").write_text(TYPED_WRONG)
    mypy = [DEV / "mypy", "--strict", "--no-incremental", "--python-executable", installed.python]
    env = clean_env(CONVEYOR_DATABASE_URL="sqlite:///unused.db")
    ok = run([*mypy, "typed_ok.py"], cwd=installed.home, env=env)
    assert ok.returncode == 0, ok.stdout
    wrong = run([*mypy, "typed_wrong.py"], cwd=installed.home, env=env)
    assert wrong.returncode == 1 and "[arg-type]" in wrong.stdout and "[assignment]" in wrong.stdout, wrong.stdout

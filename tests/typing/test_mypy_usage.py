"""Job handles are typed: ``mypy --strict`` refuses a wrong payload or option and passes correct use.

One mypy run checks four files: tests/typing/usage_ok.py and the README quick start and
docs/guide.md examples (extracted here) must pass; every line of tests/typing/usage_bad.py
marked ``# E: code`` must be reported with that code, and nothing else.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
REPORTED = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")

GUIDE_PRELUDE = '''\
"""docs/guide.md's examples, in order, after the names they take as given."""
# ruff: noqa
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

order_id = "o-1"
total = 1299
cutoff = datetime.now(timezone.utc)


class Provider:
    def send_many(self, emails: list[Any]) -> dict[int, str]:
        return {}


provider = Provider()


def notify_admin(job_type: str, job_id: int, error: str | None) -> None: ...


def smtp_send(to: str) -> str:
    return "receipt"
from pydantic import BaseModel
from conveyor import step
class Rate(BaseModel):
    rate: float
order = user = doc = "o-1"
workflow_id = "wf-1"
sale_ends = datetime.now(timezone.utc) + timedelta(days=1)


'''


def python_blocks(markdown: str) -> list[str]:
    return BLOCK.findall(markdown)


def quick_start(readme: str) -> str:
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (block,) = python_blocks(section)
    return block


def expected_errors(path: Path) -> set[tuple[int, str]]:
    marked: set[tuple[int, str]] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if "# E: " in line:
            marked.update((number, code.strip()) for code in line.split("# E: ", 1)[1].split(","))
    return marked


def test_mypy_refuses_wrong_payloads_and_options_and_passes_the_documented_use(tmp_path: Path) -> None:
    readme = tmp_path / "readme_quick_start.py"
    readme.write_text(quick_start((ROOT / "README.md").read_text()))
    guide = tmp_path / "guide_examples.py"
    guide.write_text(GUIDE_PRELUDE + "\n\n".join(python_blocks((ROOT / "docs" / "guide.md").read_text())))
    ok, bad = HERE / "usage_ok.py", HERE / "usage_bad.py"
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-absolute-path", "--cache-dir", str(tmp_path / "cache"),
         str(ok), str(bad), str(readme), str(guide)],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    reported: dict[str, set[tuple[int, str]]] = {}
    for line in run.stdout.splitlines():
        if m := REPORTED.match(line):
            reported.setdefault(m["file"], set()).add((int(m["line"]), m["code"]))
    assert run.returncode in (0, 1), run.stderr
    assert reported.get(str(ok), set()) == set(), run.stdout
    assert reported.get(str(readme), set()) == set(), run.stdout
    assert reported.get(str(guide), set()) == set(), run.stdout
    assert reported.get(str(bad), set()) == expected_errors(bad), run.stdout
    assert expected_errors(bad) >= {(28, "arg-type"), (29, "call-arg"), (30, "call-arg")}  # wrong payload, misspelt, unknown option

"""The end of a test session ends the processes its tests left running."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.leftovers import descendants, kill_descendants, running

ROOT = Path(__file__).resolve().parent.parent


def _wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_the_processes_a_process_started_and_theirs_are_killed_and_it_is_not() -> None:
    shell = subprocess.Popen(["sh", "-c", "sleep 300 & sh -c 'sleep 300 & wait' & wait"])
    try:
        _wait_for(lambda: len(descendants(shell.pid)) == 3)
        started = descendants(shell.pid)
        assert len(started) == 3

        assert sorted(kill_descendants(shell.pid)) == sorted(started)

        assert shell.wait(timeout=10) == 0  # its own `wait` returned once they were gone
        _wait_for(lambda: not any(running(pid) for pid in started))
        assert [pid for pid in started if running(pid)] == []
    finally:
        shell.kill()
        shell.wait()


def test_a_test_session_ends_with_no_process_its_tests_left_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    (tmp_path / "test_leaves_one.py").write_text(
        "import subprocess\n"
        "def test_leaves_a_sleeper() -> None:\n"
        f"    open({str(pid_file)!r}, 'w').write(str(subprocess.Popen(['sleep', '300']).pid))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", "-n", "0",
         str(tmp_path / "test_leaves_one.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout + finished.stderr
    sleeper = int(pid_file.read_text())
    _wait_for(lambda: not running(sleeper))
    assert not running(sleeper)

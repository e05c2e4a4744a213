"""Soak: ten minutes of connection churn and publishes against a real `relay emulator` process.

    python bench/soak.py                 # 600 s; prints one JSON line and exits 1 if the emulator leaked
    python bench/soak.py --seconds 60

Passes when, after the churn and a short rest, the emulator's RSS is within 10 % of its warmed-up baseline and it
holds no more file descriptors than before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.emulator_process import EmulatorProcess
from tests.reliability.soak import churn


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1))


def descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def soak(seconds: float) -> dict[str, object]:
    emulator = await EmulatorProcess.start("--app-id", "1", "--log-level", "warning")
    pid, port = emulator.process.pid, emulator.port
    http_url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/app/app-key?protocol=7"
    try:
        await churn(http_url, ws_url, app_id="1", seconds=min(30.0, seconds / 10))  # warm-up: caches, pools, arenas
        await asyncio.sleep(2)
        baseline_rss, baseline_fds = rss_kib(pid), descriptors(pid)
        started = time.monotonic()
        done = await churn(http_url, ws_url, app_id="1", seconds=seconds)
        await asyncio.sleep(5)
        final_rss, final_fds = rss_kib(pid), descriptors(pid)
    finally:
        await emulator.stop()
    growth = (final_rss - baseline_rss) / baseline_rss
    return {
        "seconds": round(time.monotonic() - started, 1),
        **done,
        "rss_baseline_kib": baseline_rss,
        "rss_final_kib": final_rss,
        "rss_growth": round(growth, 4),
        "fds_baseline": baseline_fds,
        "fds_final": final_fds,
        "passed": growth <= 0.10 and final_fds <= baseline_fds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to churn (default 600)")
    result = asyncio.run(soak(parser.parse_args().seconds))
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

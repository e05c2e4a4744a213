#!/usr/bin/env python3
"""Measure the emulator side by side with its peers, in one interleaved run, and write docs/performance.md.

The instrument is the shared benchmark harness (``../shared/bench``: a Node load generator pinned to one core, the
peers nginx + nchan, Socket.IO on Node, python-socketio and a bare ``websockets`` server, and a Pusher-protocol
driver). It is read-only there, so this script runs a copy of it (``--harness``, default ``/tmp/peer-bench``; copied
and set up on first use). Its code is not copied into this repository: it is invoked through its ``run.sh``.

    python bench/run.py                          # everything, 3 rounds (about 22 minutes on 2 cores)
    python bench/run.py --runs 1 --scenarios fanout1000,latency --targets relay,nchan,websockets

Every cell starts its server fresh (the emulator is started here, pinned to CPU 1 like the peers; the generator runs
on CPU 0), runs one scenario and stops it. Targets are rotated within each scenario and round, so drift on the
machine hits all alike. Raw JSON lines go to ``bench/results/<stamp>.jsonl``; the tables go to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report, sink

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "bench"
REPORT = REPO / "docs" / "performance.md"
APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
SERVER_CPUS = os.environ.get("SERVER_CPUS", "1")
CELL_TIMEOUT = 200.0  # run.sh bounds the generator to 150 s; this bounds everything around it


@dataclass(frozen=True)
class Target:
    name: str
    peer: str | None = None  # a harness target (run.sh starts it); None: the emulator, started here
    deflate: bool = False  # the generator offers permessage-deflate (through the `ws` client)
    ws_client: bool = False  # the generator's subscribers use the `ws` package (as with deflate), uncompressed
    workers: int = 1
    pinned: bool = True  # server on SERVER_CPUS, generator on the other core
    source: str = "current"  # "current" or "before" (--before-src)


TARGETS = {
    t.name: t
    for t in (
        Target("relay"),
        Target("nchan", peer="nchan"),
        Target("socketio-node", peer="socketio-node"),
        Target("python-socketio", peer="python-socketio"),
        Target("websockets", peer="websockets"),
        Target("relay-deflate", deflate=True),
        Target("relay-ws", ws_client=True),
        Target("websockets-deflate", peer="websockets", deflate=True),
        Target("relay-w1", pinned=False),
        Target("relay-w2", workers=2, pinned=False),
        Target("relay-before", source="before"),
        Target("relay-before-deflate", deflate=True, source="before"),
    )
}
CORE = ("relay", "nchan", "socketio-node", "python-socketio", "websockets")


@dataclass(frozen=True)
class Scenario:
    name: str
    args: str  # the harness generator's arguments; with ``sink``: --subs, --msgs and --pub-conc for bench/sink.c
    targets: tuple[str, ...]
    sink: bool = False  # the load generator is bench/sink.c (see bench/sink.py), not the harness's Node one


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("idle10k", "idle --n 10000", (*CORE, "relay-before")),
        Scenario("fanout1000", "fanout --subs 1000 --msgs 1000", (*CORE, "relay-before")),
        Scenario("fanout5000", "fanout --subs 5000 --msgs 200", (*CORE, "relay-before")),
        Scenario("latency", "latency --subs 100 --interval-ms 10 --duration-s 10", (*CORE, "relay-before")),
        Scenario("channels", "channels --channels 2000 --pub-conc 32 --duration-s 10", (*CORE, "relay-before")),
        Scenario(
            "deflate",
            "fanout --subs 1000 --msgs 300",
            ("relay", "relay-ws", "relay-deflate", "websockets", "websockets-deflate", "relay-before-deflate"),
        ),
        Scenario("workers", "--subs 4000 --msgs 1500 --pub-conc 32", ("relay-w1", "relay-w2"), sink=True),
    )
}
DEFAULT_SCENARIOS = ("idle10k", "fanout1000", "fanout5000", "latency", "channels", "deflate", "workers")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the harness ------------------------------------------------------------------------------------------------


def prepare_harness(harness: Path, shared: Path) -> None:
    """Copy the shared harness to a writable folder and run its setup.sh once (apt, npm ci, .venv)."""
    if (harness / "node_modules").is_dir() and (harness / ".venv" / "bin" / "python").exists():
        return
    if not (harness / "run.sh").exists():
        if not (shared / "run.sh").exists():
            raise SystemExit(f"no harness at {harness} and none to copy at {shared}")
        log(f"copying the harness {shared} -> {harness}")
        shutil.copytree(shared, harness, dirs_exist_ok=True)
        for path in (harness, *harness.rglob("*")):
            path.chmod(path.stat().st_mode | 0o200)
    log(f"setting up the harness in {harness} (setup.sh)")
    subprocess.run(["./setup.sh"], cwd=harness, check=True, timeout=1200)


def source_view(root: Path, where: Path) -> Path:
    """A folder on PYTHONPATH that holds ``relay`` as installed (relay/, adapters/ and emulator/ mapped in)."""
    view = where / "relay"
    view.mkdir(parents=True)
    for entry in (root / "relay").iterdir():
        (view / entry.name).symlink_to(entry)
    (view / "adapters").symlink_to(root / "adapters")
    (view / "emulator").symlink_to(root / "emulator")
    return where


# -- servers started here ---------------------------------------------------------------------------------------


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is needed for the --workers 2 scenario (Debian package redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.process, 10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.process)


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def emulator(
    target: Target, views: dict[str, Path], scratch: Path, redis: Redis | None, run: int
) -> Iterator[tuple[int, int]]:
    """Start the emulator for one cell; yields (port, pid). Logs go to the harness's scratch folder."""
    port = free_port()
    command = [sys.executable, "-m", "relay.cli", "emulator", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--app-id", APP_ID, "--key", KEY, "--secret", SECRET, "--log-level", "warning"]
    command += ["--shutdown-spread", "0"]
    if target.workers > 1:
        assert redis is not None
        command += ["--workers", str(target.workers), "--redis-url", redis.url, "--redis-prefix", f"bench{run}"]
    if target.pinned:
        command = ["taskset", "-c", SERVER_CPUS, *command]
    env = {**os.environ, "PYTHONPATH": str(views[target.source])}
    out = scratch / f"emulator-{target.name}.log"
    with out.open("wb") as stream:
        process = subprocess.Popen(
            command, cwd=scratch, env=env, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while b"listening on" not in out.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start; see {out}")
            time.sleep(0.05)
        yield port, process.pid
    finally:
        stop_process(process)
        # Nothing of a cell may outlive it (a --workers worker once did, and skewed every later cell).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


# -- one cell ---------------------------------------------------------------------------------------------------


def run_cell(
    harness: Path,
    target: Target,
    scenario: Scenario,
    run: int,
    views: dict[str, Path],
    redis: Redis | None,
) -> dict[str, object]:
    scratch = harness / "results" / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    extra = [*scenario.args.split(), "--label", scenario.name, "--run", str(run)]
    if target.deflate:
        extra.append("--deflate")
    elif target.ws_client:
        extra += ["--client", "ws"]
    env = {**os.environ, "RESULTS": str(scratch / "relay-bench.jsonl"), "PIN": "1" if target.pinned else "0"}
    started = time.monotonic()
    try:
        if scenario.sink:
            with emulator(target, views, scratch, redis, run) as (port, pid):
                line = run_sink(scratch, target, scenario, port, pid, redis)
            line.update(label=scenario.name, run=run)
        elif target.peer is not None:
            line = invoke(harness, [target.peer, *extra], env)
        else:
            with emulator(target, views, scratch, redis, run) as (port, pid):
                env["PUSHER_PID"] = str(pid)
                line = invoke(harness, ["pusher", "127.0.0.1", str(port), APP_ID, KEY, SECRET, *extra], env)
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        line = {"error": f"{type(exc).__name__}: {exc}"}
    line.update(
        bench_target=target.name,
        bench_scenario=scenario.name,
        bench_run=run,
        bench_seconds=round(time.monotonic() - started, 1),
    )
    return line


def run_sink(
    scratch: Path, target: Target, scenario: Scenario, port: int, pid: int, redis: Redis | None
) -> dict[str, object]:
    options = argparse.ArgumentParser()
    for name in ("--subs", "--msgs", "--pub-conc"):
        options.add_argument(name, type=int, required=True)
    parsed = options.parse_args(scenario.args.split())
    pids = sink.process_tree(pid)
    if target.workers > 1 and redis is not None:  # the Redis hop is part of what a second worker costs
        pids.append(redis.process.pid)
    return sink.run(
        sink.build(scratch),
        port,
        pids,
        app_id=APP_ID,
        key=KEY,
        secret=SECRET,
        subs=parsed.subs,
        msgs=parsed.msgs,
        pub_conc=parsed.pub_conc,
        server_cores=(os.cpu_count() or 1) if target.workers > 1 else 1,
        timeout=CELL_TIMEOUT - 30,
    )


def invoke(harness: Path, args: list[str], env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run(
        ["./run.sh", *args], cwd=harness, env=env, capture_output=True, text=True, timeout=CELL_TIMEOUT
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"run.sh {' '.join(args[:2])} printed no result (rc {result.returncode}): {result.stderr[-300:]}"
        )
    value = json.loads(lines[-1])
    assert isinstance(value, dict)
    return value


# -- the whole run ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--harness", type=Path, default=Path("/tmp/peer-bench"), help="writable copy of the harness")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the read-only harness to copy from")
    parser.add_argument("--runs", type=int, default=3, help="rounds of every cell (medians are reported)")
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS), help=f"any of {', '.join(SCENARIOS)}")
    parser.add_argument("--targets", help="only these targets (default: every target of each scenario)")
    parser.add_argument("--before-src", type=Path, help="an earlier source tree, measured as relay-before")
    parser.add_argument("--budget-min", type=float, default=30.0, help="skip the remaining cells after this long")
    parser.add_argument(
        "--out",
        type=Path,
        help="report to update (default: docs/performance.md, but only after a full run of every scenario and target "
        "or with --report-only; a partial run writes only its JSON lines)",
    )
    parser.add_argument("--results", type=Path, help="JSONL to write (default bench/results/<stamp>.jsonl)")
    parser.add_argument("--report-only", nargs="*", type=Path, help="only render the report from these JSONL files")
    args = parser.parse_args(argv)
    command = "python bench/run.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))

    if args.report_only is not None:  # the machine and command are those of the run, from its last line
        rows = [json.loads(line) for path in args.report_only for line in path.read_text().splitlines() if line]
        meta = next((row["bench_meta"] for row in reversed(rows) if "bench_meta" in row), None)
        if meta is None:
            raise SystemExit("no bench_meta line in the results: give the JSONL that bench/run.py wrote")
        source = Path(os.path.relpath(args.report_only[0], REPO)) if args.report_only else None
        out = args.out or REPORT
        report.write(out, rows, machine=meta["machine"], command=meta["command"], results=source)
        return 0

    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",") if name]
    only = set(args.targets.split(",")) if args.targets else None
    plan = [(scenario, [TARGETS[t] for t in scenario.targets if (only is None or t in only)]) for scenario in scenarios]
    if args.before_src is None:
        plan = [(s, [t for t in targets if t.source != "before"]) for s, targets in plan]
    plan = [(s, targets) for s, targets in plan if targets]
    raise_fd_limit()
    if not all(scenario.sink for scenario, _ in plan):
        prepare_harness(args.harness, args.shared)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results = args.results or REPO / "bench" / "results" / f"{stamp}.jsonl"
    results.parent.mkdir(parents=True, exist_ok=True)
    machine = report.machine()
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        views = {"current": source_view(REPO, Path(tmp) / "current")}
        if args.before_src is not None:
            views["before"] = source_view(args.before_src.resolve(), Path(tmp) / "before")
        needs_redis = any(t.workers > 1 for _, targets in plan for t in targets)
        redis = Redis(Path(tmp)) if needs_redis else None
        rows: list[dict[str, object]] = []
        began = time.monotonic()
        cells = sum(len(targets) for _, targets in plan) * args.runs
        log(f"relay bench {stamp}: {cells} cells -> {results}")
        try:
            for run in range(1, args.runs + 1):
                for index, (scenario, targets) in enumerate(plan):
                    order = [targets[(k + run + index) % len(targets)] for k in range(len(targets))]
                    for target in order:
                        elapsed = time.monotonic() - began
                        if elapsed > args.budget_min * 60:
                            row: dict[str, object] = {"error": "skipped: over the time budget"}
                            row.update(bench_target=target.name, bench_scenario=scenario.name, bench_run=run)
                        else:
                            row = run_cell(args.harness, target, scenario, run, views, redis)
                        rows.append(row)
                        with results.open("a") as stream:
                            stream.write(json.dumps(row) + "\n")
                        log(f"[{elapsed:5.0f}s] run {run} {scenario.name:<10} {target.name:<20} {summary(row)}")
                        time.sleep(1)
        finally:
            if redis is not None:
                redis.stop()
    machine["duration_s"] = round(time.monotonic() - began)
    with results.open("a") as stream:
        stream.write(json.dumps({"bench_meta": {"machine": machine, "command": command}}) + "\n")
    every_scenario = set(args.scenarios.split(",")) >= set(DEFAULT_SCENARIOS)
    every_cell = not any(str(row.get("error", "")).startswith("skipped: over the time budget") for row in rows)
    full_run = every_scenario and every_cell and args.targets is None and args.before_src is None
    out = args.out or (REPORT if full_run else None)
    if out is None:
        log(f"a partial run: results in {results} (render them with --report-only {results} --out FILE)")
        return 0
    report.write(out, rows, machine=machine, command=command, results=Path(os.path.relpath(results, REPO)))
    log(f"wrote {out} from {results}")
    return 0


def summary(row: dict[str, object]) -> str:
    if row.get("error"):
        return f"error: {row['error']}"
    keys = ("server_cpu_us_per_delivery", "server_cpu_us_per_publish", "deliveries_per_s", "connect_rate", "lost")
    found = [f"{key}={row[key]}" for key in keys if row.get(key) is not None]
    latency = row.get("latency_ms")
    if isinstance(latency, dict) and row.get("scenario") == "latency":
        found.append(f"p99={latency.get('p99')}")
    if row.get("server_rss_per_conn_kb") is not None:
        found.append(f"rss_kb_per_conn={row['server_rss_per_conn_kb']}")
    return " ".join(found)


if __name__ == "__main__":
    sys.exit(main())

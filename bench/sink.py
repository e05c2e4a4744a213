"""The load generator of the ``workers`` scenario: ``bench/sink.c``, built here with the machine's C compiler.

The shared harness's Node generator spends about 1 µs of CPU per delivery it receives, more than the emulator spends
sending one, so on two cores it was the bottleneck of both the one-worker and the two-worker cell and the second
worker's gain could not be seen. The C sink receives a delivery for about a fifth of the emulator's cost, so the
emulator's processes are what fills the cores. It publishes too: the same pre-signed request (signed here with the
project's signing code; the timestamp stays valid for the whole run) over keep-alive connections.

    python -m bench.sink --port 6001 --subs 4000 --msgs 1000      # against an emulator already running
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from relay.protocol.signing import sign_rest_request

SOURCE = Path(__file__).with_name("sink.c")
CHANNEL, EVENT = "bench", "bench-msg"
PAYLOAD = json.dumps({"seq": 0, "ts": 0, "pad": "x" * 64}, separators=(",", ":"))  # ~100 bytes, as the harness's


def build(where: Path) -> Path:
    """Compile sink.c once per source version into ``where``; the binary's name carries the source's hash."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the workers scenario needs a C compiler (Debian package gcc) to build bench/sink.c")
    source = SOURCE.read_bytes()
    binary = where / f"sink-{hashlib.sha256(source).hexdigest()[:12]}"
    if not binary.exists():
        where.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        subprocess.run([compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(partial), str(SOURCE)], check=True)
        partial.rename(binary)
    return binary


def publish_request(port: int, app_id: str, key: str, secret: str) -> bytes:
    """One signed ``POST /apps/{id}/events``, as its bytes go on the wire."""
    body = json.dumps({"name": EVENT, "channel": CHANNEL, "data": PAYLOAD}, separators=(",", ":")).encode()
    path = f"/apps/{app_id}/events"
    params = sign_rest_request(key, secret, "POST", path, timestamp=int(time.time()), body=body)
    head = (
        f"POST {path}?{urlencode(params)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers of ``--workers N``), read from /proc."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in children:
            found += process_tree(int(child))
    return found


def bottleneck(row: dict[str, object], server_cores: int) -> str:
    """What limited the window: the server's cores (``server``), the sink's one core (``generator``) or neither.

    With more than one worker nothing is pinned, so the server is the limit once the machine's cores are full and
    the sink is not the one filling them.
    """
    server, generator = float(str(row["server_cpu_util"])), float(str(row["gen_cpu_util"]))
    if generator >= 0.85:
        return "generator"
    if server >= 0.9 * server_cores or (server_cores > 1 and server + generator >= 0.9 * server_cores):
        return "server"
    return "neither"


def run(
    binary: Path,
    port: int,
    server_pids: list[int],
    *,
    app_id: str,
    key: str,
    secret: str,
    subs: int,
    msgs: int,
    pub_conc: int,
    server_cores: int,
    timeout: float = 120.0,
) -> dict[str, object]:
    """One fan-out: the sink's JSON line, with the bottleneck verdict added."""
    with tempfile.NamedTemporaryFile(suffix=".http") as request:
        request.write(publish_request(port, app_id, key, secret))
        request.flush()
        command = [str(binary), "127.0.0.1", str(port), key, CHANNEL, EVENT, str(subs), str(msgs), str(pub_conc)]
        command += [request.name, str(timeout), *map(str, server_pids)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"bench/sink.c printed no result (rc {result.returncode}): {result.stderr[-300:]}")
    row: dict[str, object] = json.loads(lines[-1])
    row.update(scenario="fanout", server_pids=server_pids, bottleneck=bottleneck(row, server_cores))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="the emulator's port on 127.0.0.1")
    parser.add_argument("--app-id", default="1")
    parser.add_argument("--key", default="bench-key")
    parser.add_argument("--secret", default="bench-secret")
    parser.add_argument("--subs", type=int, default=4000)
    parser.add_argument("--msgs", type=int, default=1000)
    parser.add_argument("--pub-conc", type=int, default=32, help="publishes in flight")
    parser.add_argument("--pid", type=int, action="append", default=[], help="server pids to measure (with children)")
    parser.add_argument("--server-cores", type=int, default=1, help="cores the server may use (for the verdict)")
    args = parser.parse_args(argv)
    binary = build(Path(tempfile.gettempdir()) / "relay-bench-sink")
    pids = [found for pid in args.pid for found in process_tree(pid)]
    row = run(
        binary,
        args.port,
        pids,
        app_id=args.app_id,
        key=args.key,
        secret=args.secret,
        subs=args.subs,
        msgs=args.msgs,
        pub_conc=args.pub_conc,
        server_cores=args.server_cores,
    )
    print(json.dumps(row))
    return 0 if row.get("error") is None else 1


if __name__ == "__main__":
    sys.exit(main())

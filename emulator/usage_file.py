"""The usage file (``relay emulator --usage-file``): each run's usage added to what earlier runs left there, across
restarts, ``--workers`` processes and crashes.

A run adds its usage to the file when it stops gracefully (:func:`write_usage_file`). Until then it writes its usage
so far, every ``usage_checkpoint`` seconds, to a checkpoint of its own beside the file (:class:`RunCheckpoint`), and
holds an exclusive lock on the checkpoint's lock file for as long as it lives. A checkpoint whose lock is free is a
run's that did not stop gracefully (SIGKILL, the OOM killer, a crash): the next writer of the file, or the next start
(:func:`recover_usage`), adds it to the file and removes it, so such a run loses at most one interval of usage.

Every file beside the usage file is created and removed under the exclusive lock on ``<file>.lock``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeGuard

from relay.emulator.console import generated_by
from relay.emulator.usage import (
    Peaks,
    add_peaks,
    check_usage_document,
    concurrent_peaks,
    merge_documents,
    read_peaks,
    usage_document,
)
from relay.errors import RelayError, unique_keys
from relay.protocol.frames import loads

if TYPE_CHECKING:
    from relay.emulator.server import EmulatorNode

log = logging.getLogger("relay.emulator.usage_file")

# The writers of a usage file its lock file remembers (when each served, and its peaks), for the runs that served with
# them: those that stopped within a week, the latest this many.
RUNS_REMEMBERED = 256
RUN_MEMORY_SECONDS = 7 * 86_400


def node_usage(node: EmulatorNode) -> dict[str, Any]:
    """The node's usage so far, as a usage document."""
    return usage_document([state.meter for state in node.states.values()], generated_by=generated_by())


def write_usage_file(node: EmulatorNode, path: Path, checkpoint: RunCheckpoint | None = None) -> Path:
    """Write the node's usage, added to what earlier runs left in ``path``, and remove the run's ``checkpoint``;
    returns the file written. The checkpoints of runs that did not stop are added too (:func:`recover_usage`).

    The file is replaced atomically under an exclusive lock on ``<path>.lock`` (several worker processes may share
    it). A file that is not a usage file is left alone: the usage goes to ``<path>.new`` instead, added to what that
    holds, or, when that is not a usage file either, to a new ``<path>.new.<UTC time>-<pid>``; each is logged.

    Peaks: runs that were serving at the same time (the workers of one ``--workers`` run, the nodes of a cluster)
    add theirs up (:func:`concurrent_peaks`); a run that started after the others stopped keeps the larger peak. The
    lock file remembers, per file, when its recent writers served and their own peaks.
    """
    own = node_usage(node)
    started = min((state.meter.started_at for state in node.states.values()), default=time.time())
    with _locked(path) as lock, _dead_runs(path) as dead:
        runs = _read_runs(lock.read())
        target, old = _usage_target(path)
        now = time.time()
        writers = runs.get(target.name, [])
        concurrent = {} if old is None else concurrent_peaks(writers, started, now)
        earlier = _with_dead_runs(old, dead)
        document = own if earlier is None else merge_documents(earlier, own, concurrent)
        finished = [run.path for run in dead] + ([] if checkpoint is None else [checkpoint.path])
        _replace(target, document, finished)
        if checkpoint is not None:
            checkpoint.close()
        if target.name in (path.name, path.name + ".new"):  # not a file named after the time: it has no successor
            kept = [run for run in writers if run[1] > now - RUN_MEMORY_SECONDS][-(RUNS_REMEMBERED - 1) :]
            runs[target.name] = [*kept, (started, now, add_peaks({}, own))]
            files = {
                name: [{"started": start, "until": stop, "peaks": peaks} for start, stop, peaks in records]
                for name, records in runs.items()
            }
            lock.seek(0)
            lock.truncate()
            lock.write(json.dumps({"version": 2, "files": files}) + "\n")
    _log_recovered(dead, target)
    log.info("usage written", extra={"path": str(target), "apps": len(document["apps"])})
    return target


def recover_usage(path: Path) -> None:
    """Add the checkpoints of the runs that did not stop (their lock is free) to the usage file at ``path``, each as
    a run that was serving alone (its peaks are not added to any other's), and remove them. A live run's checkpoint
    is left to it; one that is not a usage document is left alone, and logged."""
    with _locked(path), _dead_runs(path) as dead:
        if not any(run.usage is not None for run in dead):  # only what runs left before their first checkpoint
            for run in dead:
                _remove_run(run.path)
            return
        target, old = _usage_target(path)
        document = _with_dead_runs(old, dead)
        assert document is not None
        _replace(target, document, [run.path for run in dead])
    _log_recovered(dead, target)


class RunCheckpoint:
    """This run's usage so far, in a file of its own beside the usage file, ``<file>.run.<pid>-<random>``, replaced
    atomically every interval while the run holds an exclusive lock on ``<checkpoint>.lock`` (a separate file: the
    checkpoint's inode changes at each write)."""

    def __init__(self, usage_file: Path) -> None:
        self.path = usage_file.with_name(f"{usage_file.name}.run.{os.getpid()}-{secrets.token_hex(4)}")
        self.written_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[None] | None = None
        # Created and locked under the usage file's lock: another process looking for dead runs in between would
        # find its lock free, take it for a dead run's and remove it.
        with _locked(usage_file):
            self._lock: int | None = os.open(_lock_of(self.path), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def write(self, document: Mapping[str, Any]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(document, sort_keys=True) + "\n")
        os.replace(temporary, self.path)
        self.written_at = time.time()

    def start(self, usage: Callable[[], Mapping[str, Any]], interval: float) -> None:
        """Write ``usage()`` every ``interval`` seconds until :meth:`stop`."""
        self._task = asyncio.create_task(self._keep(usage, interval), name="usage checkpoint")

    async def _keep(self, usage: Callable[[], Mapping[str, Any]], interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            # The snapshot on the event loop, where the meters change; the file in a thread, so a slow disk does not
            # hold up the connections.
            self._writing = asyncio.create_task(asyncio.to_thread(self.write, usage()))
            try:
                await asyncio.shield(self._writing)
            except OSError as exc:
                log.warning("usage checkpoint %s could not be written: %s", self.path, exc.strerror or exc)

    async def stop(self) -> None:
        """Stop writing; once this returns, no write is in progress or to come (a cancelled write's thread would
        still put the checkpoint back after :func:`write_usage_file` removed it, and the run would count twice)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        if self._writing is not None:
            with contextlib.suppress(OSError):  # the usage file is written next: that is what matters now
                await self._writing

    def close(self) -> None:
        """Let go of the run's lock (its files were removed, or it is left to the next writer)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def lost(self) -> str:
        """What the run loses when the usage file cannot be written at its stop."""
        if self.written_at is None:
            return "this run's usage is lost"
        return f"its usage up to {_utc(self.written_at)} is kept in {self.path}, which the next run adds to the file"


def start_checkpoint(node: EmulatorNode) -> RunCheckpoint | None:
    """The node's checkpoint, written every ``usage_checkpoint`` seconds; None (logged) when it cannot be created."""
    assert node.config.usage_file is not None
    try:
        checkpoint = RunCheckpoint(Path(node.config.usage_file))
    except OSError as exc:  # checked at start-up: the directory went away (or read-only) since
        log.error("usage checkpoints cannot be written: %s; a crash would lose this run's usage", exc)
        return None
    checkpoint.start(lambda: node_usage(node), node.config.usage_checkpoint)
    return checkpoint


def usage_file_problem(path: Path) -> str | None:
    """Why the usage file could not be written at ``path`` at shutdown (its directory is missing, is not one, or
    cannot be written to; the path is a directory, or something else that is not a file), or None. Creates the lock
    file, as writing it would."""
    directory = path.parent
    if not directory.exists():
        return f"its directory {directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if path.is_dir():
        return "it is a directory"
    if path.exists() and not path.is_file():  # a FIFO or a device: reading it at shutdown would wait forever
        return "it is not a regular file"
    lock = _lock_of(path)
    probe = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for created in (lock, probe):
        try:
            os.close(os.open(created, os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as exc:
            return f"{created} cannot be created: {exc.strerror or exc}"
    probe.unlink()
    return None


def _utc(seconds: float) -> str:
    """A checkpoint's write time, as the logs give it (UTC, to the second)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _lock_of(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[TextIO]:
    """The lock file of the usage file at ``path``, open and locked exclusively."""
    descriptor = os.open(_lock_of(path), os.O_RDWR | os.O_CREAT, 0o644)
    # A lock file holding what is not UTF-8 (damaged) reads as what it is not: remembered runs, which are then none.
    with open(descriptor, "r+", encoding="utf-8", errors="replace") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield lock


@dataclass(frozen=True, slots=True)
class _DeadRun:
    path: Path  # its checkpoint
    usage: dict[str, Any] | None  # None: it died before its first checkpoint
    written_at: float
    lock: int


@contextlib.contextmanager
def _dead_runs(path: Path) -> Iterator[list[_DeadRun]]:
    """The runs of the usage file at ``path`` whose lock is free, with their locks held meanwhile. Called under the
    usage file's lock."""
    names = re.compile(re.escape(path.name) + r"(\.run\.[0-9]+-[0-9a-f]{8})(?:\.lock|\.tmp)?")
    found = sorted({match.group(1) for name in os.listdir(path.parent) if (match := names.fullmatch(name))})
    dead: list[_DeadRun] = []
    try:
        for run in found:
            checkpoint = path.with_name(path.name + run)
            lock = os.open(_lock_of(checkpoint), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                usage = _read_usage(checkpoint)
                written_at = checkpoint.stat().st_mtime if usage is not None else 0.0
            except BlockingIOError:  # a live run's
                os.close(lock)
                continue
            except ValueError as exc:
                os.close(lock)
                log.error("usage checkpoint %s is not a usage document (%s); left alone", checkpoint, exc)
                continue
            except BaseException:
                os.close(lock)
                raise
            dead.append(_DeadRun(checkpoint, usage, written_at, lock))
        yield dead
    finally:
        for run in dead:
            os.close(run.lock)


def _with_dead_runs(old: dict[str, Any] | None, dead: list[_DeadRun]) -> dict[str, Any] | None:
    """``old`` (None: no file yet) with the usage of the ``dead`` runs added, each as a run that served alone."""
    document = old
    for run in dead:
        if run.usage is not None:
            document = run.usage if document is None else merge_documents(document, run.usage)
    return document


def _replace(target: Path, document: Mapping[str, Any], finished: list[Path]) -> None:
    """Put ``document`` in ``target`` atomically and remove the ``finished`` runs' checkpoints, in an order where a
    crash loses a checkpoint rather than counting it twice: the new file is written in full first (a failure there
    leaves the checkpoints), then the checkpoints are removed, then the new file is put in place."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        for checkpoint in finished:
            _remove_run(checkpoint)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, target)


def _remove_run(checkpoint: Path) -> None:
    for leftover in (checkpoint, checkpoint.with_name(checkpoint.name + ".tmp"), _lock_of(checkpoint)):
        leftover.unlink(missing_ok=True)


def _log_recovered(dead: list[_DeadRun], target: Path) -> None:
    for run in dead:
        if run.usage is not None:
            written = _utc(run.written_at)
            log.warning(
                "usage of a run that did not stop: %s, last written %s, added to %s",
                run.path.name,
                written,
                target,
                extra={"checkpoint": str(run.path), "written_at": written, "path": str(target)},
            )


Runs = dict[str, list[tuple[float, float, Peaks]]]


def _read_runs(text: str) -> Runs:
    """What the lock file remembers of a file's recent writers (started, stopped, own peaks), per file name; nothing
    when it holds anything else. A version 1 lock file remembers one, the last, with the peaks of the runs that served
    with it summed, from a start it did not keep: taken as having served from the start of time."""
    try:
        value = json.loads(text) if text.strip() else {}
    except (ValueError, RecursionError):  # damaged, or nested past what the parser takes
        return {}
    files = value.get("files") if isinstance(value, dict) else None
    runs: Runs = {}
    for name, records in files.items() if isinstance(files, dict) else ():
        for run in records if isinstance(records, list) else [records]:
            if not isinstance(run, dict):
                continue
            until, started = run.get("until"), run.get("started", 0.0)
            if _is_time(until) and _is_time(started):
                runs.setdefault(name, []).append((float(started), float(until), read_peaks(run.get("peaks"))))
    return runs


def _is_time(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _usage_target(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """The file to write and the usage it already holds (None: a new file)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidates = [path, path.with_name(path.name + ".new"), path.with_name(f"{path.name}.new.{stamp}-{os.getpid()}")]
    for candidate, following in itertools.pairwise(candidates):
        try:
            return candidate, _read_usage(candidate)
        except ValueError as exc:
            log.error("usage file %s is not a usage file (%s); writing %s instead", candidate, exc, following)
    return candidates[-1], None


def _read_usage(path: Path) -> dict[str, Any] | None:
    """The usage file at ``path``, None when there is none; ValueError when something else is there."""
    try:
        # An editor's UTF-8 byte order mark, as relay cost reads the file: it made a usage file "foreign".
        text = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"it cannot be read: {exc.strerror or exc}") from None
    try:
        document = check_usage_document(loads(text, "the file"))
    except RelayError as exc:
        raise ValueError(exc.message) from None
    json.loads(text, object_pairs_hook=unique_keys)  # checked: valid JSON, not deeper than loads takes
    return document

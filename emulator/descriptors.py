"""Open files: every connection holds one descriptor, so the process's open-file limit is its connection limit.

Linux starts services with a soft limit of 1024 (the hard limit is usually far higher), and past it the kernel refuses
``accept`` while libuv quietly accepts and drops the waiting connections: clients see a closed socket and nothing is
logged. So the CLI raises the soft limit to the hard one at start, and the node warns when its connections come near
the limit it has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger("relay.emulator")

# What the soft limit is raised to when the hard limit is unlimited: Linux's default fs.nr_open, which no
# per-process limit may exceed anyway.
UNLIMITED_CEILING = 1 << 20
MACOS_OPEN_MAX = 10_240
# Descriptors the process holds besides its connections (listening sockets, the event loop, stdio, logs, Redis,
# webhook connections): a warning leaves at least this many, or a tenth of the limit, free.
SPARE_DESCRIPTORS = 32


def soft_limit_wanted(soft: int, hard: int, unlimited: int) -> int:
    """The soft open-file limit to ask for: the hard limit (``unlimited`` is the platform's RLIM_INFINITY), never
    lower than ``soft``."""
    if soft == unlimited:
        return soft
    ceiling = UNLIMITED_CEILING if hard == unlimited else hard
    return max(soft, ceiling)


def crowded_at(limit: int | None) -> int | None:
    """How many open connections come near an open-file limit of ``limit`` (None: no limit, no warning)."""
    if limit is None:
        return None
    return max(1, limit - max(SPARE_DESCRIPTORS, limit // 10))


def quota_past_limit(quotas: Mapping[str, int], limit: int | None) -> str | None:
    """What to warn of when the apps' ``max_connections`` (by app id) add up to more connections than an open-file
    limit of ``limit`` holds (None: they fit): the limit is then met first, and its connections are dropped
    unanswered, unlogged, where the quota would have refused them with 4004, which pusher-js does not retry."""
    room = crowded_at(limit)
    total = sum(quotas.values())
    if room is None or total <= room:
        return None
    if len(quotas) == 1:
        [(app_id, quota)] = quotas.items()
        configured = f"app {app_id}'s max_connections ({quota})"
    else:
        configured = f"the max_connections of apps {', '.join(quotas)} add up to {total}, which"
    return (
        f"{configured} is more than the open-file limit of {limit} holds (about {room} connections, leaving "
        "descriptors for the rest): connections past it are dropped unanswered instead of refused with 4004; "
        "raise the limit (ulimit -n, or LimitNOFILE= in a systemd unit) or lower max_connections"
    )


def open_files_limit() -> int | None:
    """The process's soft open-file limit; None where it is unlimited or the platform has none."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> tuple[int, int] | None:
    """Raise the soft open-file limit to the hard one; returns (before, after) when it changed."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = soft_limit_wanted(soft, hard, resource.RLIM_INFINITY)
    # macOS refuses more than kern.maxfilesperproc under an unlimited hard limit: then its OPEN_MAX, which it takes.
    for candidate in dict.fromkeys((wanted, min(wanted, MACOS_OPEN_MAX))):
        if candidate <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, hard))
        except (ValueError, OSError) as exc:
            log.debug("open-file limit not raised to %s: %s", candidate, exc)
            continue
        return soft, candidate
    return None

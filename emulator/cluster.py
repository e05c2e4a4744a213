"""Several emulator nodes sharing one Redis: cross-node fan-out, cluster-wide presence, once-per-cluster webhooks.

Each node keeps serving its own connections from memory and tells the others what changes, over one Redis pub/sub
channel (the *bus*):

- a publish or client event: the frame text, the channel, the excluded socket id and the 5 KiB units of its data;
  every other node delivers it to its local subscribers, so each subscriber gets it exactly once, and meters those
  deliveries as its own (the publish itself is metered once, on the node it was made on; a publish made through Ably
  carries its Ably ProtocolMessage too, for the Ably connections);
- its presence members, subscription counts and signed-in users; every node keeps a replica of the others'
  (:class:`~relay.emulator.hub.RemoteState`) so presence and the HTTP API's counts are answered cluster-wide, and
  each node sends its own subscribers the member events of cluster-wide transitions;
- its Ably connections' presence changes, as the PRESENCE ProtocolMessage its Ably peers got; every node keeps a
  replica of those members (:class:`~relay.emulator.hub.ForeignPresence`) and sends the message on to its own.

Redis also holds each node's state (``nodestate:{node}``, for nodes that join later) and a heartbeat key with a TTL.
When a heartbeat expires, the survivors drop that node's members (sending ``member_removed``), and exactly one of
them (the one whose ``SREM`` on the node set succeeds) settles the dead node's share of the webhook counters, of
every app (a departure of an app it does not serve is held for a node that does).

Webhooks fire once per cluster transition: counters in Redis count the nodes that hold a channel (or a member), and
only the node that moves a counter from 0 to 1 (or 1 to 0) sends the webhook. A held ``channel_vacated`` or
``member_removed`` is a Redis key; whoever comes back first deletes it, which cancels the pending webhook. The hold is
also in a sorted set by its due time (Redis's clock): the node that made it releases it with its own timer, and if it
cannot (it was killed, or cut off from Redis when the timer ran), another node's sweep, or its own once Redis is back,
takes it a little later and sends it. A node shutting down hands its holds to the others' sweep, due at their own
time, so a client it closed that comes back on another node still cancels them; the last node to leave sends them.
Whoever deletes the key sends the webhook, so it is sent once.

During a Redis outage each node keeps serving its local subscribers; what is published meanwhile reaches only the
node it was published on, and other nodes' state changes arrive after the reconnection, when every node
reconciles its state in Redis with what it holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import logging
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgpack  # type: ignore[import-untyped]
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.emulator.ably_auth import NONCE_KEPT_MS
from relay.emulator.ably_hub import DELIVERED, Outbound
from relay.emulator.http_api import published_answer
from relay.emulator.hub import CACHE_MISS_INTERVAL, AppHolding, AppState, CacheVersion, MemberAdmission
from relay.emulator.logs import redact_urls
from relay.emulator.wire import encode_text
from relay.errors import ConfigError
from relay.protocol.ably import LEAVE, PRESENT
from relay.protocol.idempotency_keys import IDEMPOTENCY_WINDOW_SECONDS

log = logging.getLogger("relay.emulator.cluster")
_ABLY_MEMBER_KEYS = ("id", "clientId", "connectionId")

_SEP = "\x1f"
# A field every reconciliation writes into the node's state with what it holds, holding nothing included: a state
# without it (Redis lost its data, and the node has registered again but not yet written what it holds) is not read
# as "holds nothing". Its kind is none NodeState.parse reads, so nodes of an earlier release skip it.
_WRITTEN_FIELD = _SEP.join(("w", "", ""))
# A node's heartbeat value: a node that writes _WRITTEN_FIELD beats this; one of an earlier release beats "1" and
# writes no mark, so its state is read as it stands. Only the mark tells a state written whole: until its
# reconciliation, a node whose data Redis lost writes its changes (a subscription count, a member) into an empty state.
_MARKS_ITS_STATE = "2"
CLOSE_SECONDS = 3.0  # the longest each step of leaving the cluster may take
START_SECONDS = 10.0  # the longest connecting to Redis may take at start-up before it is given up
RECANCEL_SECONDS = 0.1  # how often a cancelled call or task that has not ended is cancelled again (_cancellable)
HOLD_SWEEP_SECONDS = 1.0  # how often each node looks for held webhooks that their own node did not release
# How long past its due time a hold is left to the node that made it (whose timer runs at about that time, and whose
# release may wait behind a batch) before another node takes it.
HOLD_GRACE_SECONDS = 2.0
_SWEEP_LIMIT = 100  # holds taken by one script run: a backlog (after an outage) is taken in several
RESULT_TTL_SECONDS = 60.0  # how long Redis keeps a count's answer (the script's PX 60000)
_NOT_COUNTED = 2  # the count script's answer when Redis's generation is not the node's
_REFUSED = 3  # its answer to a member's admission past the channel's member limit (counting nothing)
# How long a presence join waits for Redis's admission: unanswered by then (Redis stalled while connected), the node
# decides alone, at once, and a late answer that counted a user the node does not hold is counted out again.
ADMISSION_DEADLINE_SECONDS = 1.0
# The longest a node acts on the replies of one round trip without letting its other work run (see _Commands.run).
ACTING_SLICE_SECONDS = 0.005
# Publishes on the bus: kind, node, app, channel, excluded socket id, 5 KiB units of the data (one per event, comma
# separated), body. P: an HTTP API publish, C: a client event (each with its Pusher frame), A: an Ably publish.
_PUBLISHES = ("P", "C", "A")
# KEYS: counter hash, pending key, the counting node's state hash, this count's result key, the holds' sorted set, the
# generation key. ARGV: field, delta, pending ttl (ms), the node's state field for this count, its value, the webhook
# delay (ms), the hold (on -1), the generation the node counts in, and a limit on the counter's fields ('' for none: a
# presence channel's member limit, for a user's admission, as the member counter holds a field per user any node
# holds). A +1 for a field not there yet, with the limit's fields there already, counts nothing and answers 3 (the
# node refuses the user): being one script, users joining at once on several nodes are admitted one at a time. A
# Redis whose generation is not that one lost the data the count would move (a flush, noticed by the node only at its
# next heartbeat): nothing is done, and the script answers 2, so the node keeps its own record as it was for the
# restore. The counter moves only if the node's
# state field does (set on +1, deleted on -1), in the same script, so counting what a reconciliation already counted
# changes nothing; and a count run again under the same result key (a batch retried after a dropped connection, whose
# first run may have happened with its answer lost) answers what the first run did. Returns 1 on 0→1 (send the "up"
# webhook), -1 on 1→0 (hold the "down" webhook), 0 otherwise (including a 0→1 that cancelled a held "down" webhook).
# A hold's pending key holds the hold: JSON of the result key that made it (its id, which a release checks), the app
# and the webhook, so any node can send it. The sorted set scores each pending key by when it is due, from Redis's
# clock (the nodes' clocks may disagree); its TTL is raised to each new pending key's, never lowered, so it expires with
# the last of them if it is not emptied first.
_COUNT_SCRIPT = """
if redis.call('GET', KEYS[6]) ~= ARGV[8] then return 2 end
local done = redis.call('GET', KEYS[4])
if done then return tonumber(done) end
local function count()
  if tonumber(ARGV[2]) > 0 then
    if ARGV[9] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
        and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[9]) then
      return 3
    end
    if redis.call('HSET', KEYS[3], ARGV[4], ARGV[5]) == 0 then return 0 end
  elseif redis.call('HDEL', KEYS[3], ARGV[4]) == 0 then
    return 0
  end
  local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
  if tonumber(ARGV[2]) > 0 then
    if n == 1 then
      redis.call('ZREM', KEYS[5], KEYS[2])
      if redis.call('DEL', KEYS[2]) == 1 then return 0 end
      return 1
    end
    return 0
  end
  if n <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('SET', KEYS[2], ARGV[7], 'PX', ARGV[3])
    local now = redis.call('TIME')
    local due = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[6])
    redis.call('ZADD', KEYS[5], due, KEYS[2])
    if redis.call('PTTL', KEYS[5]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[5], ARGV[3]) end
    return -1
  end
  return 0
end
local result = count()
redis.call('SET', KEYS[4], result, 'PX', 60000)
return result
"""


@dataclass(slots=True)
class _Batch:
    """The batch the write task is running. A retried batch makes the same counts in the same order, so the n-th count
    of a batch has the same result key in both runs, and the counts whose answer was acted on are not acted on again:
    ``answered`` keeps, by count number, what each answered its first run, for what follows from it to run again.
    """

    number: int
    counts: int = 0
    answered: dict[int, int | None] = field(default_factory=dict)


Reply = Callable[[Any], None]


class _Commands:
    """Commands for Redis sent together, one round trip for them all, count scripts included, and what to do with
    their replies: Redis runs them in the order they were queued (the count scripts among the plain commands, such as
    the bus's publishes), and the replies are acted on in that order once the round trip is back. Acting on a reply
    may queue more commands (an admission whose connection left meanwhile counts its user out again): :meth:`run`
    sends those in one more round trip, after all of this one's, and before anything the node queues later (the
    write task takes its next batch only once :meth:`run` is done)."""

    def __init__(self, pipe: Any, batch: _Batch | None, send: Callable[[Any], Awaitable[list[Any]]]) -> None:
        self.pipe = pipe
        self.batch = batch  # None: a reconciliation or a settlement, run once
        self._send = send
        # What to do with each reply of the next round trip: the command's index in the pipeline, or None for a reply
        # known already (a count its batch's failed run answered), acted on in its turn among the others.
        self._replies: list[tuple[int | None, Reply]] = []
        self._loaded: set[str] = set()  # the scripts this round trip loads before it calls them

    def script(self, script: Any, keys: list[str], args: list[str | int], then: Reply) -> None:
        """Queue a call of a registered script, and ``then`` for its reply. Its ``SCRIPT LOAD`` goes first, in the
        same round trip (not redis-py's ``SCRIPT EXISTS``, a round trip of its own before each): a Redis that lost its
        scripts (restarted, ``SCRIPT FLUSH``) has it again for the ``EVALSHA``s that follow, and no call fails."""
        if script.sha not in self._loaded:
            self._loaded.add(script.sha)
            self.pipe.script_load(script.script)
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)
        self.then(then)

    def then(self, act: Reply) -> None:
        """Act on the reply of the command queued last, once the round trip is back."""
        self._replies.append((len(self.pipe) - 1, act))

    def known(self, reply: Any, act: Reply) -> None:
        """Act on ``reply``, known already, in its turn: after the replies of the commands queued before."""
        self._replies.append((None, lambda _: act(reply)))

    async def run(self) -> None:
        """Send what is queued and act on the replies, again while acting queues more. Acting on a burst's replies
        (each admission's decision sends its member events) lets the node's other work run every ACTING_SLICE_SECONDS,
        as waiting for each count's answer did: its local subscribers are not held up while it acts on them all."""
        loop = asyncio.get_running_loop()
        while self._replies or len(self.pipe):
            replies = await self._send(self.pipe) if len(self.pipe) else []
            acting, self._replies = self._replies, []
            self._loaded.clear()
            slice_started = loop.time()
            for index, act in acting:
                reply = None if index is None else replies[index]
                if isinstance(reply, Exception):  # that command failed; raised below, once the others are acted on
                    continue
                act(reply)
                if loop.time() - slice_started > ACTING_SLICE_SECONDS:
                    await asyncio.sleep(0)
                    slice_started = loop.time()
            # Redis ran every other command of the round trip (a pipeline without a transaction): what they did, such
            # as a release that deleted its hold, is acted on above, and only then does the batch fail (its error
            # handling reconciles what the failed command left undone)
            failure = next((reply for reply in replies if isinstance(reply, Exception)), None)
            if failure is not None:
                raise failure


def _ignore(answer: int | None) -> None:
    """For a count whose answer needs nothing more than what :meth:`RedisCluster._count` does with it."""


# KEYS: pending key, the holds' sorted set. ARGV: the hold. Deletes the key only if it is still that hold's: a stale
# timer (this node's or another's, from a hold that was cancelled and made again since) does not release a newer hold
# early; nor does a timer whose hold another node's sweep has taken.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], KEYS[1])
return redis.call('DEL', KEYS[1])
"""
# KEYS: the holds' sorted sets (one per app: a node takes only holds of apps it serves, so nodes whose app lists differ,
# as in a rolling deploy, send each app's held webhooks from a node that has its webhook settings). ARGV: grace (ms),
# most holds to take, and "every" to take every hold whatever its time (the last node leaving the cluster) or "due".
# Takes the holds due more than the grace ago by
# Redis's clock, as their release would (the set's member names the pending key, whose current hold is the one that
# score belongs to: every script that changes one changes the other), and returns them. Being one script, a hold is
# taken by one node only, and not after its own node's release or a returning client deleted it. A member whose
# pending key expired (not taken for 30 s past its time) is dropped.
_SWEEP_SCRIPT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local limit = tonumber(ARGV[2])
local upto = ms - tonumber(ARGV[1])
if ARGV[3] == 'every' then upto = '+inf' end
local taken = {}
for _, holds in ipairs(KEYS) do
  local due = redis.call('ZRANGEBYSCORE', holds, '-inf', upto, 'LIMIT', 0, limit - #taken)
  for _, pending in ipairs(due) do
    redis.call('ZREM', holds, pending)
    local hold = redis.call('GET', pending)
    if hold then
      redis.call('DEL', pending)
      taken[#taken + 1] = hold
    end
  end
  if #taken >= limit then break end
end
return taken
"""
# KEYS: pending key, the holds' sorted set. ARGV: the hold, the sweep's grace (ms). A node leaving the cluster hands a
# hold it made to the nodes that stay: no timer of its own will release it, so it is made due the grace earlier, for
# their sweep to take it at its own time rather than the grace after it that a live node's timer is given. Only if
# the key is still that hold's: a returning client may have cancelled it, and another node held it anew since.
_HAND_OVER_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local due = redis.call('ZSCORE', KEYS[2], KEYS[1])
if not due then return 0 end
redis.call('ZADD', KEYS[2], 'XX', tonumber(due) - tonumber(ARGV[2]), KEYS[1])
return 1
"""
# KEYS: a cache channel's event key, its version key. ARGV: the event (JSON), its version's milliseconds and node id,
# the TTL (ms). Stores the event only if its version is greater than the one stored (see relay.emulator.hub's
# CacheVersion): two nodes' writes for one channel may reach Redis in either order, and the newer stays. Answers
# whether it stored. The version has a key of its own, with the event's TTL, so the event key holds what it always
# did (a node of an earlier release reads it, and its plain SET leaves the version, which the next publish passes).
_CACHE_SCRIPT = """
local stored = redis.call('GET', KEYS[2])
if stored then
  local ms, node = string.match(stored, '^(%d+) (%d+)$')
  ms, node = tonumber(ms), tonumber(node)
  local new_ms, new_node = tonumber(ARGV[2]), tonumber(ARGV[3])
  if ms and (ms > new_ms or (ms == new_ms and node >= new_node)) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. ARGV[3], 'PX', ARGV[4])
return 1
"""


def _cache_version(stored: str | None) -> CacheVersion:
    """A version key's value; a missing one (written by a node of an earlier release) is older than any."""
    if stored is None:
        return 0, 0
    milliseconds, node = stored.split(" ")
    return int(milliseconds), int(node)


@dataclass(frozen=True, slots=True)
class NodeState:
    """What one node holds, as stored in ``nodestate:{node}``."""

    subscriptions: dict[tuple[str, str], int] = field(default_factory=dict)
    members: dict[tuple[str, str, str], str] = field(default_factory=dict)
    users: set[tuple[str, str]] = field(default_factory=set)
    # Ably members: (app, channel, connection id, client id) → their PRESENT item, packed (data may be binary).
    ably_members: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    # The channels this node counts in the channel counters (its `channel_occupied` without a `channel_vacated`).
    occupied: set[tuple[str, str]] = field(default_factory=set)
    # app → the node's connections, for the apps with a connection quota.
    connections: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, fields: Mapping[str, str]) -> NodeState:
        state = cls()
        for key, value in fields.items():
            kind, _, rest = key.partition(_SEP)
            app_id, _, tail = rest.partition(_SEP)
            try:  # one unreadable field must not stop the node that reads it from writing to Redis
                if kind == "a":
                    channel, connection_id, client_id = json.loads(tail)
                    _ably_member(value)
                    state.ably_members[(app_id, channel, connection_id, client_id)] = value
                elif kind == "s":
                    state.subscriptions[(app_id, tail)] = int(value)
                elif kind == "m":
                    channel, user_id = json.loads(tail)
                    state.members[(app_id, channel, user_id)] = value
                elif kind == "u":
                    state.users.add((app_id, json.loads(tail)))
                elif kind == "o":
                    state.occupied.add((app_id, tail))
                elif kind == "n":
                    state.connections[app_id] = int(value)
            except (ValueError, TypeError):
                log.warning("unreadable field in a node's state skipped: %.200r", key)
        return state

    @classmethod
    def of(cls, states: Iterable[AppState]) -> NodeState:
        node = cls()
        for state in states:
            app_id = state.app.app_id
            for name, channel in state.channels.items():
                node.subscriptions[(app_id, name)] = len(channel.subscribers)
                node.occupied.add((app_id, name))
                for user_id, entry in channel.members.items():
                    node.members[(app_id, name, user_id)] = entry.user_info_json
            node.users.update((app_id, user_id) for user_id in state.users)
            if state.app.max_connections is not None and state.peers:
                node.connections[app_id] = len(state.peers)
            if state.foreign_presence is not None:
                for name, item in state.foreign_presence.held():
                    key = (app_id, name, item["connectionId"], item["clientId"])
                    node.ably_members[key] = _pack(item)
        return node

    def holding(self, app_id: str) -> AppHolding:
        """What the node holds of one app (its Ably members unpacked), for a replica to apply."""
        return AppHolding(
            subscriptions={name: count for (app, name), count in self.subscriptions.items() if app == app_id},
            members={(name, user_id): info for (app, name, user_id), info in self.members.items() if app == app_id},
            users={user_id for app, user_id in self.users if app == app_id},
            connections=self.connections.get(app_id, 0),
            ably_members={
                (name, connection_id, client_id): _ably_member(item)
                for (app, name, connection_id, client_id), item in self.ably_members.items()
                if app == app_id
            },
        )

    def fields(self) -> dict[str, str]:
        encoded = {_SEP.join(("s", *key)): str(count) for key, count in self.subscriptions.items()}
        encoded.update({_member_field(*key): info for key, info in self.members.items()})
        encoded.update({_user_field(*key): "1" for key in self.users})
        encoded.update({_ably_member_field(*key): item for key, item in self.ably_members.items()})
        encoded.update({_occupied_field(*key): "1" for key in self.occupied})
        encoded.update({_connections_field(app_id): str(count) for app_id, count in self.connections.items()})
        return encoded


def _written_state(beat: str | None, fields: Mapping[str, str], *, empty_holds_nothing: bool) -> NodeState | None:
    """What a node's stored state (``fields``, read with its heartbeat ``beat``) says it holds, or None when that is
    not known yet: the reader keeps what it knew of the node, and reads it again on the node's announcement of its
    state (its snapshot). A node that marks its state (beat _MARKS_ITS_STATE) wrote it whole only with the mark:
    without it Redis lost its data and the node has not restored it yet (its state empty, or holding only changes it
    wrote since). A node without a heartbeat is gone (its burial forgets it) or Redis lost its data, and it registers
    again and announces. An earlier release's state (beat "1") has no mark and is read as it stands; an empty one is
    read as holding nothing only if ``empty_holds_nothing`` (a re-read, most likely of a node that holds nothing), else
    as not written yet (a registration, which follows an outage or a data loss)."""
    if _WRITTEN_FIELD in fields:
        return NodeState.parse(fields)
    if beat is None or beat == _MARKS_ITS_STATE or not (fields or empty_holds_nothing):
        return None
    return NodeState.parse(fields)


def _occupied_field(app_id: str, channel: str) -> str:
    return _SEP.join(("o", app_id, channel))


def _connections_field(app_id: str) -> str:
    return _SEP.join(("n", app_id, ""))


def _member_field(app_id: str, channel: str, user_id: str) -> str:
    """User ids may hold any character: JSON keeps the separator out of them, as for Ably members."""
    return _SEP.join(("m", app_id, json.dumps([channel, user_id])))


def _user_field(app_id: str, user_id: str) -> str:
    return _SEP.join(("u", app_id, json.dumps(user_id)))


def _ably_member_field(app_id: str, channel: str, connection_id: str, client_id: str) -> str:
    """Ably names may hold any character: JSON keeps the separator out of them (it escapes control characters)."""
    return _SEP.join(("a", app_id, json.dumps([channel, connection_id, client_id])))


def bus_channel(prefix: str, db: int) -> str:
    """The bus's pub/sub channel for a deployment on database ``db``. Redis's pub/sub ignores database numbers (a
    PUBLISH reaches the channel's subscribers on every database), so the number is in the name; database 0 keeps the
    name it always had, so the nodes of a running deployment and those upgraded in a rolling restart still hear each
    other."""
    return f"{prefix}:bus" if db == 0 else f"{prefix}:bus:{db}"


def _pack(value: Any) -> str:
    return base64.b64encode(msgpack.packb(value, use_bin_type=True)).decode()


def _unpack(text: str) -> Any:
    return msgpack.unpackb(base64.b64decode(text), raw=False, strict_map_key=False)


def unreachable(url: str, exc: BaseException) -> ConfigError:
    """The one-line error for a Redis that cannot be reached at start-up (its URL without the password)."""
    reason = str(exc).strip().rstrip(".") or type(exc).__name__
    if isinstance(exc, TimeoutError):
        reason = f"no answer within {START_SECONDS:g} s"
    password = urlsplit(url).password
    if isinstance(exc, AuthenticationError) and not password:
        # redis-py's words for it ("HELLO must be called with the client already authenticated, …") name neither the
        # password nor where it goes; this text holds no secret, and redacting it would hide the URL's form.
        return ConfigError(
            f"cannot reach Redis at {redact_urls(url)}: it asks for a password and the URL has none: write it in the"
            " URL, redis://:PASSWORD@HOST:PORT/DB, best as redis_url in the config file's [server] (ps shows the"
            " command line)"
        )
    if password:
        reason = reason.replace(password, "***")
    return ConfigError(f"cannot reach Redis at {redact_urls(url)}: {redact_urls(reason)}{_tls_hint(url, exc)}")


def _tls_hint(url: str, exc: BaseException) -> str:
    """What a URL whose scheme does not match the port's TLS may have failed by: redis-py's words for it name no TLS.
    A plain port takes the TLS handshake's first bytes for a command still being written and does not answer (a
    timeout), and something else may answer it with what is no handshake (an SSL error); a TLS-only port resets a
    connection that does not start with a handshake."""
    causes = (exc, exc.__context__)
    scheme = urlsplit(url).scheme
    timed_out = any(isinstance(cause, TimeoutError | RedisTimeoutError) for cause in causes)
    # Only this SSL error: the others (a certificate not trusted, a handshake refused) come from a port serving TLS
    no_handshake = any(isinstance(cause, ssl.SSLError) and cause.reason == "WRONG_VERSION_NUMBER" for cause in causes)
    if scheme == "rediss" and (timed_out or no_handshake):
        return " (the port may not serve TLS: a plain Redis port takes redis://, rediss:// needs its tls-port)"
    if scheme == "redis" and any(isinstance(cause, ConnectionResetError) for cause in causes):
        return " (the port may be one that serves TLS only, as Redis's tls-port does: its URL is rediss://)"
    return ""


_T = TypeVar("_T")


async def _cancellable(awaitable: Awaitable[_T]) -> _T:
    """Await redis-py's ``awaitable`` so that cancelling the caller ends it at once, however redis-py takes it.

    On Python 3.11 redis-py loses a cancellation: it sends each command through ``asyncio.wait_for`` (for its socket
    timeout, 5 s by default), which returns the send's result, dropping the cancellation, when the cancellation comes
    as the send completes (fixed in 3.12). Ctrl-C at start-up (``asyncio.run`` cancels the main task) was lost when it
    came as the connection sent its HELLO: the start-up then waited for the answer of a Redis that accepts connections
    but does not answer, and ended 5 s later as "cannot reach Redis ...: Timeout reading", status 2, not 130. Here the
    caller awaits the call's own task through a shield, and a cancellation ends that wait whatever the task does with
    it; the task is cancelled, again until it has ended (a lost cancellation is followed by another), and then the
    caller's cancellation goes on."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            task.cancel()
            await asyncio.wait((task,), timeout=RECANCEL_SECONDS)
        if not task.cancelled():
            task.exception()  # retrieved: an error that ended it meanwhile is superseded by the cancellation
        raise


async def _cancelled(tasks: Collection[asyncio.Task[None]]) -> None:
    """``tasks`` cancelled, and cancelled again while they run on, for CLOSE_SECONDS at most: on Python 3.11 redis-py
    loses a cancellation that comes as a command completes (see :func:`_cancellable`), and a loop that lost it (the
    heartbeat's) ran on past the node's close, re-registering the node, until the event loop's own end waited on it
    for ever. Bounded: a task cancelled inside a redis-py read can take its time to end (or not end), and a process
    that is shutting down must not wait on it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_SECONDS
    running = set(tasks)
    while running and (left := deadline - loop.time()) > 0:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=min(RECANCEL_SECONDS, left))
    for task in tasks:  # retrieved, so a task that ended on a Redis error is not reported again at exit
        if task.done() and not task.cancelled():
            task.exception()


def url_option_problem(url: str) -> str | None:
    """What redis-py cannot take among ``url``'s options (``?name=value``), or None. It passes them to each connection
    as keyword arguments, so one it does not know failed only inside the first connection, as a TypeError."""
    scheme = urlsplit(url).scheme
    try:
        pool = aioredis.Redis.from_url(url).connection_pool
        pool.connection_class(**pool.connection_kwargs)  # a connection as the pool builds it, connected to nothing
    except TypeError as exc:
        unexpected = re.search(r"unexpected keyword argument '([^']*)'", str(exc))
        name = unexpected.group(1) if unexpected else str(exc)
        problem = f"option {name!r} is not one redis-py reads from a {scheme}:// URL"
        tls_option = name.startswith("ssl_") and scheme != "rediss"
        return problem + (" (the ssl_ options are rediss://'s)" if tls_option else "")
    except (ValueError, RedisError) as exc:  # a value it cannot read: "Invalid value for 'db' in connection URL."
        return str(exc).rstrip(".")
    return None


async def check_reachable(url: str) -> None:
    """Connect to the Redis at ``url`` and ping it, as a node's start does; raise :func:`unreachable`'s error."""
    client: aioredis.Redis = aioredis.Redis.from_url(url)
    try:
        async with asyncio.timeout(START_SECONDS):
            await _cancellable(client.ping())
    except (RedisError, OSError) as exc:
        raise unreachable(url, exc) from None
    finally:
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()


def _ably_member(text: str) -> dict[str, Any]:
    """A stored Ably member's PRESENT item; ValueError unless it has what a replica needs."""
    item = _unpack(text)
    if (
        not isinstance(item, dict)
        or not all(isinstance(item.get(name), str) for name in _ABLY_MEMBER_KEYS)
        or not isinstance(item.get("timestamp"), int)
    ):
        raise ValueError("not an Ably presence item")
    return item


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    url: str
    prefix: str = "relay"
    node_ttl: float = 10.0
    reconnect_max: float = 5.0


# What a change queues for Redis (see _Commands): its commands, and what to do with their replies.
Operation = Callable[[_Commands], None]


@dataclass(slots=True, eq=False)
class _Admitting:
    """A presence join waiting for Redis's answer (:meth:`RedisCluster.admit_member`)."""

    admission: MemberAdmission
    epoch: int
    decided: bool = False
    late: bool = False  # decided by the node alone at the admission's deadline, its script maybe still to answer
    deadline: asyncio.TimerHandle | None = None


def _remember_published(
    state: AppState, identity_hex: str, digest_hex: str, answer: str, *, seconds_left: float | None = None
) -> None:
    """Another node's keyed publish, as publish_remembered sends and stores it, for its resends here."""
    state.published_keys.remember(
        bytes.fromhex(identity_hex),
        bytes.fromhex(digest_hex),
        published_answer(answer.encode()),
        seconds_left=seconds_left,
    )


def _nothing(commands: _Commands) -> None:
    """Queued to wake the writer, which sends the coalesced counts with its next batch."""


class RedisCluster:
    """The bus and shared state of one node; implements :class:`~relay.emulator.hub.ClusterLink`."""

    def __init__(self, settings: ClusterSettings, node_id: int) -> None:
        self.settings = settings
        self.node_id = node_id
        self._redis: aioredis.Redis = aioredis.Redis.from_url(settings.url, decode_responses=True)
        self._states: dict[str, AppState] = {}
        # Operations carry the epoch they were queued in: a reconnection starts a new one, reconciling Redis with what
        # the node holds, so what was queued before it is already accounted for and is dropped, not replayed.
        self._queue: asyncio.Queue[tuple[int, Operation]] = asyncio.Queue()
        self._epoch = 0
        self._accepting = False  # False while Redis is away: operations are dropped at once (the queue stays bounded)
        # Delayed webhooks, by pending key: the timer, the app, the webhook, the hold's id; kept until the release has
        # run in Redis (one dropped during an outage is released again on reconnection, or restored after data loss).
        self._held: dict[str, tuple[asyncio.TimerHandle, str, dict[str, object], str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Counts announced once per write cycle, whatever the churn: (app, channel) → the channel's subscribers here,
        # (app, None) → the app's connections here.
        self._dirty_counts: dict[tuple[str, str | None], int] = {}
        self._count_script = self._redis.register_script(_COUNT_SCRIPT)
        self._release_script = self._redis.register_script(_RELEASE_SCRIPT)
        self._sweep_script = self._redis.register_script(_SWEEP_SCRIPT)
        self._hand_over_script = self._redis.register_script(_HAND_OVER_SCRIPT)
        self._cache_script = self._redis.register_script(_CACHE_SCRIPT)
        self._connected = asyncio.Event()
        self._recovering = asyncio.Lock()
        self._pubsub: Any = None
        self._known_nodes: set[int] = set()
        # Publishes carry "<node>.<sequence number>": a batch that timed out is sent again (see _failed), and Redis may
        # have run the first one when it woke, so a receiver drops what it has seen from that node already; a number
        # past the next one tells it that the publishes in between never reached it (the bus is at most once).
        self._publish_numbers = itertools.count()
        self._last_published: dict[int, int] = {}
        # Told of each signed TokenRequest's nonce another node accepted: (key name, nonce, timestamp, ms it is kept)
        self.nonce_heard: Callable[[str, str, int, int], None] | None = None
        self.lost_operations = 0
        self.missed_messages = 0  # other nodes' publishes this node found it never got
        self._instance = secrets.token_hex(6)  # result keys of a node restarted with the same id are not its own
        self._batches = 0
        self._unreconciled = False  # operations were lost and Redis is not reconciled with this node yet
        self._rejoined_at = float("-inf")  # when this node registered again after an outage
        # The channels and members this node has counted, as its nodestate in Redis holds them: what it announced.
        # A Redis that lost its data (restarted without persistence, flushed) lost that record, and this is the copy
        # the reconciliation then compares with (see _restore).
        self._counted = NodeState()
        # The deployment's mark in Redis, made by the first node to register: a different one later means the data
        # this node counted in is gone.
        self._generation: str | None = None
        self._counting_in = ""  # the generation the counts are made in (the one being reconciled with)
        # Counts sent whose answer has not come back, by result key: when it was sent and what acting on it needs (see
        # _count). A count whose answer was lost (Redis stalled past the socket timeout and ran it later) is looked up
        # when the node reconciles, so its webhook is sent: the reconciliation finds the field set and counts nothing.
        # Whoever removes the entry acts on the answer: the count when it comes back, or the reconciliation.
        self._unanswered: dict[str, tuple[float, str, str, dict[str, object], str, float, bool]] = {}
        # Result keys a reconciliation acted on, with when: a retry of the same count (a failed batch run again) gets
        # the same answer back and must not act on it a second time.
        self._looked_up: dict[str, float] = {}
        # What this node had announced when it found that Redis lost its data, kept until the restore has completed
        # (a restore cut short by another Redis error starts again from it, not from what it had half rebuilt).
        self._restoring: NodeState | None = None
        self._key_prefix = f"{settings.prefix}:"
        # The database as redis-py read it from the URL (its path, or ?db=), 0 when the URL names none.
        self.bus = bus_channel(settings.prefix, int(self._redis.connection_pool.connection_kwargs.get("db") or 0))
        # Presence joins waiting for Redis's admission: decided by the node alone if their operation is lost.
        self._admitting: set[_Admitting] = set()
        # Webhooks waiting for this node's count of their channel (and of the member each names), by (app, channel):
        # see after_channel_counted.
        self._awaiting_channel: dict[tuple[str, str], list[tuple[dict[str, object], str | None]]] = {}

    # -- keys -------------------------------------------------------------------------------------------------

    def _key(self, *parts: object) -> str:
        return self._key_prefix + ":".join(str(part) for part in parts)

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def start(self, states: Mapping[str, AppState]) -> None:
        """Join the cluster; a Redis that cannot be reached (down, a wrong password) is a :class:`ConfigError`."""
        self._states = dict(states)
        try:
            # Through _cancellable: a Ctrl-C (or the timeout) that redis-py would lose still ends the start-up at once.
            async with asyncio.timeout(START_SECONDS):  # the connection; registering may take longer (a big cache)
                self._pubsub = await _cancellable(self._subscribe())
            await _cancellable(self._register())
        except (RedisError, OSError) as exc:
            with contextlib.suppress(RedisError, OSError):
                if self._pubsub is not None:
                    await self._pubsub.aclose()
                await self._redis.aclose()
            raise unreachable(self.settings.url, exc) from None
        self._tasks = [
            asyncio.create_task(self._listen()),
            asyncio.create_task(self._write()),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._sweep()),
        ]

    async def close(self) -> None:
        # The connections just closed queued their leaves and vacates: once counted, their holds are in Redis.
        await self._drain()
        self._send_every_awaiting()  # due, and no count of their channel is coming now
        for pending in list(self._admitting):  # their sessions are closed: no deadline is left to fire after this
            self._admission_done(pending)
        await _cancelled(self._tasks)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_SECONDS):
                    await self._pubsub.aclose()
        # Leaving is bounded: with Redis down, the survivors' heartbeat check settles this node instead, and the
        # holds stay in Redis for their sweep.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.srem(self._key("nodes"), self.node_id)
                    pipe.delete(self._key("node", self.node_id))
                    pipe.publish(self.bus, self._announcement("bye"))
                    await pipe.execute()
                await self._settle(self.node_id, await self._node_state(self.node_id))
                await self._hand_over_holds()
        for handle, *_ in self._held.values():  # handed over or sent; a release from here would reach no one
            handle.cancel()
        self._held.clear()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await self._redis.aclose()

    async def _hand_over_holds(self) -> None:
        """Leaving, once out of the node set: the holds this node made go to the nodes that stay, whose sweep sends
        each at its time unless its member or channel comes back meanwhile, on any node (a client closed by this
        shutdown comes back on another within the webhook delay, and nothing is sent, as when it comes back to a node
        that stays). The last node to leave, with no one to hand them to, sends every held webhook of its apps now,
        as a single node does; nodes leaving together each look after leaving the set, so the last to look sees none
        left and sends what the others handed over too."""
        if any(node != self.node_id for node in await self._live_nodes()):
            grace_ms = int(HOLD_GRACE_SECONDS * 1000)
            async with self._redis.pipeline(transaction=False) as pipe:
                for pending, (_, app_id, _, hold) in self._held.items():
                    keys = [pending, self._key("holds", app_id)]
                    await self._hand_over_script(keys=keys, args=[hold, grace_ms], client=pipe)
                await pipe.execute()
        else:
            await self._take_overdue_holds(every=True)

    async def _drain(self) -> None:
        """Wait, for a bounded time, until the write task has run every queued operation."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await self._queue.join()

    async def _subscribe(self) -> Any:
        pubsub: Any = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.bus)
        except BaseException:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            raise
        return pubsub

    async def _register(self) -> None:
        """Announce this node, reconcile its stored state with what it holds, and load the other nodes' state."""
        ttl_ms = int(self.settings.node_ttl * 1000)
        await self._redis.set(self._key("node", self.node_id), _MARKS_ITS_STATE, px=ttl_ms)
        await self._redis.sadd(self._key("nodes"), self.node_id)
        await self._reconcile()
        for node in await self._live_nodes():
            if node != self.node_id:
                beat: str | None = await self._redis.get(self._key("node", node))  # type: ignore[assignment]
                held = _written_state(beat, await self._node_fields(node), empty_holds_nothing=False)
                if held is not None:  # else read when that node's snapshot comes on the bus
                    self._apply_snapshot(node, held)
        await self._load_cache()
        await self._load_published()
        await self._load_nonces()
        self._connected.set()

    async def _live_nodes(self) -> list[int]:
        members = [int(node) for node in await self._redis.smembers(self._key("nodes"))]
        alive = await asyncio.gather(*(self._redis.exists(self._key("node", node)) for node in members))
        return [node for node, exists in zip(members, alive, strict=True) if exists]

    async def _node_fields(self, node: int) -> dict[str, str]:
        fields: dict[str, str] = await self._redis.hgetall(self._key("nodestate", node))  # type: ignore[assignment]
        return fields

    async def _node_state(self, node: int) -> NodeState:
        return NodeState.parse(await self._node_fields(node))

    async def _reconcile(self, *, new_epoch: bool = True) -> None:
        """Make ``nodestate`` and the webhook counters match what this node holds (after a start or an outage, or
        after operations were lost). ``new_epoch`` drops what is still queued (an outage's stale publishes); without
        it the queue runs on after this, which the counting script makes safe (what this counted is not again)."""
        generation, data_lost = await self._data_lost()
        self._counting_in = generation or ""
        if not data_lost:  # else the answers went with the data, and the restore counts what this node holds
            await self._look_up_answers()
        stored = NodeState() if data_lost else await self._node_state(self.node_id)
        if new_epoch:
            self._decide_alone()  # their operations are dropped with the epoch: what the node holds is reconciled
            self._epoch += 1  # from here on what changes is queued for this connection; what came before is in `held`
        self._accepting = True
        held = NodeState.of(self._states.values())
        # The counts these wait for were lost (dropped with the epoch, or in a failed batch) or are counted by this
        # reconciliation; those added from here on wait for counts queued after it.
        waiting = {id(entry): entry for entries in self._awaiting_channel.values() for entry in entries}
        self._unreconciled = False
        async with self._redis.pipeline(transaction=False) as pipe:
            counts = _Commands(pipe, None, self._send)
            if data_lost:
                self._restore(counts, held)
            else:
                self._release_overdue()
                for app_id, channel in held.occupied - stored.occupied:
                    self._count_channel(counts, app_id, channel, +1)
                for app_id, channel in stored.occupied - held.occupied:
                    self._count_channel(counts, app_id, channel, -1)
                for (app_id, channel, user_id), info in held.members.items():
                    if (app_id, channel, user_id) not in stored.members:
                        self._count_member(counts, app_id, channel, user_id, +1, info)
                for app_id, channel, user_id in stored.members.keys() - held.members.keys():
                    self._count_member(counts, app_id, channel, user_id, -1)
            await counts.run()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key("nodestate", self.node_id))
            fields = {**held.fields(), _WRITTEN_FIELD: "1"}
            pipe.hset(self._key("nodestate", self.node_id), mapping=fields)  # type: ignore[arg-type]
            pipe.publish(self.bus, self._announcement("snapshot"))
            for state in self._states.values():  # a restarted Redis lost the cache: what this node has goes back
                app_id, now = state.app.app_id, state.clock()
                for channel, (event, data, expires, version) in list(state.cache.items()):
                    if expires > now:  # not over a newer event another node stored meanwhile
                        keys, args = self._cache_write(app_id, channel, event, data, expires - now, version)
                        await self._cache_script(keys=keys, args=args, client=pipe)
                        # The others keep the newer of theirs and this (one published here while Redis was away), by
                        # its version with the node that published it, which may be another
                        ttl = expires - now
                        announced = self._announcement("c", app_id, channel, event, data, ttl, *version)
                        pipe.publish(self.bus, announced)
            await pipe.execute()
        self._counted = NodeState(occupied=set(held.occupied), members=dict(held.members))
        # Those waiting before it are due now: counted by it, or of a channel or member left meanwhile, whose count
        # is not coming any more (they would otherwise wait until shutdown).
        for app_id, channel in list(self._awaiting_channel):
            self._send_awaiting(app_id, channel, before=waiting)
        self._generation, self._restoring = generation, None  # only now: a reconciliation cut short is run again
        if self._dirty_counts:  # counts that changed while Redis was away: announced now, their webhooks on the echo
            self._enqueue(_nothing)

    async def _data_lost(self) -> tuple[str | None, bool]:
        """Redis's generation mark, and whether Redis lost the cluster's data since this node last reconciled: the
        mark is not the one this node saw then. The first node to register after the loss (or ever) makes a new one."""
        key = self._key("generation")
        await self._redis.set(key, secrets.token_hex(8), nx=True)
        generation: str | None = await self._redis.get(key)  # type: ignore[assignment]
        lost = self._generation is not None and generation != self._generation
        if lost:
            log.warning(
                "Redis lost the cluster's data (a restart without persistence, or a flush); restoring this "
                "node's counts from what it announced"
            )
            # The others' heartbeats went with the data: give them node_ttl to register again, as after an outage.
            self._rejoined_at = asyncio.get_running_loop().time()
        return generation, lost

    async def _look_up_answers(self) -> None:
        """Act on the answers of counts that Redis ran but whose answer this node did not get; an entry whose answer
        is not there either is left for a count still waiting for it, until the answer would have expired."""
        now = asyncio.get_running_loop().time()
        for result_key, looked_up_at in list(self._looked_up.items()):
            if now - looked_up_at > RESULT_TTL_SECONDS:  # no retry can get its answer any more
                del self._looked_up[result_key]
        for result_key, entry in list(self._unanswered.items()):
            answer = await self._redis.get(result_key)
            if answer is None:
                if now - entry[0] > RESULT_TTL_SECONDS:
                    self._unanswered.pop(result_key, None)
                continue
            if self._unanswered.pop(result_key, None) is not None:  # else the count got it meanwhile and acted
                self._looked_up[result_key] = now
                _, app_id, pending, webhook, hold, delay, quiet = entry
                self._webhook(app_id, 0 if quiet else int(answer), pending, webhook, hold, delay)

    def _restore(self, counts: _Commands, held: NodeState) -> None:
        """Queue the counts, in a Redis that lost its data, of what this node holds, announcing only what neither it
        nor (by its replica) another node had announced before, and hold the departures of what it announced and no
        longer holds (left during the outage).

        The nodes come back at different times, each counting only its own: a departure is held for node_ttl (or
        the webhook delay, if longer), the time every live node has to return, and one that comes back holding the
        channel or member cancels it, as a return within the webhook delay does."""
        if self._restoring is None:
            announced = self._restoring = self._counted
            self._counted = NodeState()  # Redis holds none of it now; the counts fill it again
        else:  # a restore cut short: the same again, from what this node had announced
            announced = self._restoring
        for handle, app_id, event, _ in self._held.values():  # departures announced by nothing yet: still due
            handle.cancel()
            channel = str(event["channel"])
            if event["name"] == "channel_vacated":
                announced.occupied.add((app_id, channel))
            else:
                announced.members[(app_id, channel, str(event["user_id"]))] = "null"
        self._held.clear()

        def departure_delay(app_id: str) -> float:
            return max(self.settings.node_ttl, self._states[app_id].app.webhook_delay)

        # What another node held before the loss was announced by it: a channel or member new here during the outage
        # is not announced again when this node counts it in before that node does.
        def occupied_elsewhere(app_id: str, channel: str) -> bool:
            return self._states[app_id].remote.subscription_count(channel) > 0

        def member_elsewhere(app_id: str, channel: str, user_id: str) -> bool:
            return self._states[app_id].remote.member_info(channel, user_id) is not None

        for app_id, channel in held.occupied | announced.occupied:
            quiet = (app_id, channel) in announced.occupied or occupied_elsewhere(app_id, channel)
            self._count_channel(counts, app_id, channel, +1, quiet=quiet)
        for app_id, channel in announced.occupied - held.occupied:
            self._count_channel(counts, app_id, channel, -1, delay=departure_delay(app_id))
        for (app_id, channel, user_id), info in (announced.members | held.members).items():
            quiet = (app_id, channel, user_id) in announced.members or member_elsewhere(app_id, channel, user_id)
            self._count_member(counts, app_id, channel, user_id, +1, info, quiet=quiet)
        for app_id, channel, user_id in announced.members.keys() - held.members.keys():
            self._count_member(counts, app_id, channel, user_id, -1, delay=departure_delay(app_id))

    async def _kept(self, *key_parts: str | int) -> list[tuple[int, str, str]]:
        """(milliseconds left, key, value) of each key under ``key_parts`` that Redis keeps for a while (the news of
        keyed publishes and used nonces, for the nodes that did not hear it), soonest to expire first."""
        keys = [key async for key in self._redis.scan_iter(match=self._key(*key_parts, "*"), count=1000)]
        kept: list[tuple[int, str, str]] = []
        for start in range(0, len(keys), 1000):  # a round trip per thousand: an app may have 10,000 of them
            batch = keys[start : start + 1000]
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.pttl(key)
                    pipe.get(key)
                answers = await pipe.execute()
            for key, ttl_ms, value in zip(batch, answers[::2], answers[1::2], strict=True):
                if value is not None and ttl_ms > 0:
                    kept.append((ttl_ms, key, value))
        return sorted(kept)

    async def _load_published(self) -> None:
        """The other nodes' publishes under an idempotency key (the Pusher API's) or with message ids (Ably's) within
        the window, which this node did not hear of."""
        for state in self._states.values():
            app_id = state.app.app_id
            identity_at = len(self._key("published", app_id, ""))
            for ttl_ms, key, value in await self._kept("published", app_id):  # in the order PublishedKeys keeps them
                _remember_published(state, key[identity_at:], *json.loads(value), seconds_left=ttl_ms / 1000)
            if state.foreign_presence is not None:
                for ttl_ms, _, value in await self._kept("ably-published", app_id):
                    channel, ids, message_id, serials = json.loads(value)
                    state.foreign_presence.published_elsewhere_before(channel, tuple(ids), message_id, serials, ttl_ms)

    async def _load_nonces(self) -> None:
        """The nonces of the signed TokenRequests the other nodes accepted, which this node did not hear of."""
        if self.nonce_heard is not None:
            for ttl_ms, _, value in await self._kept("nonce"):
                key_name, nonce, timestamp = json.loads(value)
                self.nonce_heard(key_name, nonce, timestamp, ttl_ms)

    async def _load_cache(self) -> None:
        for state in self._states.values():
            app_id = state.app.app_id
            found: list[tuple[float, str, str, str, CacheVersion]] = []
            channel_at = len(self._key("cache", app_id, ""))
            clock = asyncio.get_running_loop().time
            async for key in self._redis.scan_iter(match=self._key("cache", app_id, "*"), count=500):
                version_key = self._key("cache-version", app_id, key[channel_at:])
                value, ttl_ms, stored_version = await asyncio.gather(
                    self._redis.get(key), self._redis.pttl(key), self._redis.get(version_key)
                )
                if value is not None and ttl_ms > 0:
                    channel, event, data = json.loads(value)
                    version = _cache_version(stored_version)  # type: ignore[arg-type]  # decode_responses: a str
                    # When it expires, not the TTL left: read one by one, a TTL read later is shorter by the wait
                    found.append((clock() + ttl_ms / 1000, channel, event, data, version))
            # Stored soonest to expire first: the store drops expired events from its front (SCAN's order is none)
            for expires_at, channel, event, data, version in sorted(found):
                state.cache_store(channel, event, data, max(expires_at - clock(), 0.001), version)

    # -- ClusterLink: called synchronously by the hub -----------------------------------------------------------

    def _enqueue(self, operation: Operation) -> bool:
        """Queue ``operation`` for Redis; False if it is dropped, Redis being away."""
        if not self._accepting:  # Redis is away: the reconciliation on its return accounts for this change
            self.lost_operations += 1
            return False
        self._queue.put_nowait((self._epoch, operation))
        return True

    def published(
        self,
        app_id: str,
        channel: str,
        frame_text: str,
        exclude: str | None,
        units: int,
        *,
        client_event: bool = False,
        origin: object = None,
    ) -> None:
        if isinstance(origin, Outbound):  # Ably's message for it, made here: every node's Ably peers and history get it
            fields = origin.fields
            self.published_ably(app_id, channel, [frame_text], exclude, fields, [units], client_event=client_event)
            return
        kind = "C" if client_event else "P"
        origin = self._publish_origin()
        self._enqueue(self._on_bus(_SEP.join((kind, origin, app_id, channel, exclude or "", str(units), frame_text))))

    def published_ably(
        self,
        app_id: str,
        channel: str,
        frame_texts: list[str],
        exclude: str | None,
        ably_fields: dict[str, Any],
        units: list[int],
        *,
        client_event: bool = False,
    ) -> None:
        """An Ably publish: its Pusher events and its ProtocolMessage, so every node's Ably peers get the same
        message (id, extras, serial) rather than one translated back from Pusher (msgpack: data may be bytes). Or a
        Pusher publish (``client_event``: a client event) with the Ably message its node made for it, so that its
        serial, id and timestamp are the same on every node too (a node of an earlier release meters its deliveries
        as an Ably publish's)."""
        publish: dict[str, Any] = {"texts": frame_texts, "fields": ably_fields}
        if client_event:
            publish["client_event"] = True
        try:
            payload = _pack(publish)
        except (OverflowError, TypeError, ValueError):  # JSON extras msgpack cannot hold (an integer over 64 bits)
            for text, unit in zip(frame_texts, units, strict=True):  # translated from Pusher by the other nodes
                self.published(app_id, channel, text, exclude, unit)
            return
        meter = ",".join(map(str, units))
        origin = self._publish_origin()
        self._enqueue(self._on_bus(_SEP.join(("A", origin, app_id, channel, exclude or "", meter, payload))))

    def _publish_origin(self) -> str:
        return f"{self.node_id}.{next(self._publish_numbers)}"

    def ably_presence(self, app_id: str, channel: str, fields: dict[str, Any]) -> None:
        """An Ably PRESENCE message: stored members follow it, and the other nodes' Ably peers get it as it is."""

        def announce(commands: _Commands) -> None:
            for item in fields["presence"]:
                field_name = _ably_member_field(app_id, channel, item["connectionId"], item["clientId"])
                if item["action"] == LEAVE:
                    commands.pipe.hdel(self._key("nodestate", self.node_id), field_name)
                else:
                    member = _pack({**item, "action": PRESENT})
                    commands.pipe.hset(self._key("nodestate", self.node_id), field_name, member)
            self._announce("a", app_id, channel, _pack(fields))(commands)

        self._enqueue(announce)

    def publish_remembered(self, app_id: str, identity: bytes, digest: bytes, answer: bytes) -> None:
        news = [digest.hex(), answer.decode()]

        def store(commands: _Commands) -> None:
            # Kept in Redis for the window too, for the nodes that do not hear the news: one started later, one
            # whose bus subscription dropped (see _load_published)
            key = self._key("published", app_id, identity.hex())
            commands.pipe.set(key, json.dumps(news), px=int(IDEMPOTENCY_WINDOW_SECONDS * 1000))
            self._announce("k", app_id, identity.hex(), *news)(commands)

        self._enqueue(store)

    def ably_published(
        self, app_id: str, channel: str, ids: tuple[str, ...], message_id: str, serials: list[str]
    ) -> None:
        """An Ably publish with message ids, which the bus carries to the other nodes with the message: kept in Redis
        for the window too, for the nodes that do not hear it (see _load_published)."""
        text = json.dumps([channel, ids, message_id, serials])

        def store(commands: _Commands) -> None:
            key = self._key("ably-published", app_id, hashlib.sha256(text.encode()).hexdigest())
            commands.pipe.set(key, text, px=int(IDEMPOTENCY_WINDOW_SECONDS * 1000))

        self._enqueue(store)

    def nonce_used(self, key_name: str, nonce: str, timestamp: int) -> None:
        """A signed TokenRequest this node accepted: used once in the cluster, not once a node. Told to the others,
        and kept in Redis as long as a node keeps it, for the nodes that do not hear it (see _load_nonces)."""
        used = [key_name, nonce, timestamp]
        text = json.dumps(used)

        def store(commands: _Commands) -> None:
            key = self._key("nonce", hashlib.sha256(text.encode()).hexdigest())
            commands.pipe.set(key, text, px=NONCE_KEPT_MS)
            self._announce("nonce", *used)(commands)

        self._enqueue(store)

    def _announce(self, kind: str, *args: object) -> Operation:
        return self._on_bus(self._announcement(kind, *args))

    def _announcement(self, kind: str, *args: object) -> str:
        """The bus message announcing ``kind`` (``"c"``, ``"m+"``…) of this node, with ``args``."""
        return "J" + json.dumps([kind, self.node_id, *args])

    def _on_bus(self, text: str) -> Operation:
        def send(commands: _Commands) -> None:
            commands.pipe.publish(self.bus, text)

        return send

    def channel_occupied(self, app_id: str, channel: str) -> None:
        self._enqueue(lambda commands: self._count_channel(commands, app_id, channel, +1))

    def channel_vacated(self, app_id: str, channel: str) -> None:
        self._dirty_counts[(app_id, channel)] = 0

        def vacate(commands: _Commands) -> None:
            self._count_channel(commands, app_id, channel, -1)

        self._enqueue(vacate)

    def subscription_count(self, app_id: str, channel: str, local_count: int) -> None:
        self._dirty_counts[(app_id, channel)] = local_count
        self._enqueue(_nothing)

    def connection_count(self, app_id: str, local_count: int) -> None:
        self._dirty_counts[(app_id, None)] = local_count
        self._enqueue(_nothing)

    def member_joined(self, app_id: str, channel: str, user_id: str, user_info_json: str) -> None:
        def join(commands: _Commands) -> None:
            self._announce("m+", app_id, channel, user_id, user_info_json)(commands)
            # Counted even when its admission counted the user (the node's field is set: nothing moves, and the script
            # stores this info in it, which may be new), so the count follows a leave of another connection of the
            # user queued before this join.
            self._count_member(commands, app_id, channel, user_id, +1, user_info_json)

        self._enqueue(join)

    def admit_member(
        self, app_id: str, channel: str, user_id: str, user_info_json: str, admission: MemberAdmission
    ) -> bool:
        """Count ``user_id`` in ``channel``'s members only within the app's member limit: the count script checks
        the counter (HEXISTS, HLEN) and counts the user in the same run, one round trip, so users joining at once on
        several nodes are admitted one at a time, and a user already counted (held by another node, or another
        connection here) is admitted at once. ``admission`` gets the answer (:meth:`MemberAdmission.decide`); a user
        counted whose connection left meanwhile (and whom no other connection here holds) is counted out again. A
        join whose operation is lost (a Redis outage, a failed batch, Redis's data lost) is decided by the node alone
        (:meth:`_decide_alone`), as are the joins made while Redis is away (False: nothing is asked), and those Redis
        has not answered within ``ADMISSION_DEADLINE_SECONDS`` (a Redis stalled while connected): a late answer
        that counted the user is then counted out again unless the node holds the user."""
        if not self._accepting:
            return False
        limit = self._states[app_id].app.limits.max_presence_members
        pending = _Admitting(admission, self._epoch)
        self._admitting.add(pending)

        def expire() -> None:
            if not pending.decided:
                pending.decided = pending.late = True
                self._admitting.discard(pending)
                admission.decide(None)

        pending.deadline = asyncio.get_running_loop().call_later(ADMISSION_DEADLINE_SECONDS, expire)
        # Decided once, for a batch run again after a dropped connection (which must make the same counts in order).
        skip: bool | None = None
        undo: bool | None = None

        def admit(commands: _Commands) -> None:
            nonlocal skip
            if skip is None:
                skip = pending.decided or not admission.waiting()  # left, or past its deadline, before asked
                if skip:
                    self._admission_done(pending)
            if skip:
                return

            def answered(result: int | None) -> None:
                nonlocal undo
                if undo is None:
                    counted = result is not None and result != _REFUSED
                    if not pending.decided:
                        self._admission_done(pending)
                        held = admission.decide(None if result is None else counted)
                        undo = counted and not held
                    else:  # decided alone: at its deadline (undone unless held), or its operation lost (reconciled)
                        undo = pending.late and counted and not admission.held()
                if undo:  # in the next round trip: before what the node queued since (the decision's join among it)
                    self._count_member(commands, app_id, channel, user_id, -1)

            self._count_member(commands, app_id, channel, user_id, +1, user_info_json, limit=limit, then=answered)

        self._enqueue(admit)
        return True

    def _admission_done(self, pending: _Admitting) -> None:
        """``pending`` is decided (or needs no decision): no longer waiting, its deadline cancelled."""
        pending.decided = True
        self._admitting.discard(pending)
        if pending.deadline is not None:
            pending.deadline.cancel()

    def _decide_alone(self, *, stale_only: bool = False) -> None:
        """The joins waiting for Redis's admission whose answer may not come are decided by the node alone, against
        the members it knows of (as while Redis is away); Redis is reconciled with what the node then holds, and the
        operations still queued for them do nothing. ``stale_only``: those queued before the current epoch."""
        for pending in list(self._admitting):
            if stale_only and pending.epoch == self._epoch:
                continue
            decided = pending.decided
            self._admission_done(pending)
            if not decided:
                pending.admission.decide(None)

    def member_left(self, app_id: str, channel: str, user_id: str) -> None:
        def leave(commands: _Commands) -> None:
            self._announce("m-", app_id, channel, user_id)(commands)
            self._count_member(commands, app_id, channel, user_id, -1)

        self._enqueue(leave)

    def user_online(self, app_id: str, user_id: str, online: bool) -> None:
        field_name = _user_field(app_id, user_id)

        def announce(commands: _Commands) -> None:
            if online:
                commands.pipe.hset(self._key("nodestate", self.node_id), field_name, "1")
            else:
                commands.pipe.hdel(self._key("nodestate", self.node_id), field_name)
            self._announce("u", app_id, user_id, online)(commands)

        self._enqueue(announce)

    def terminate_user(self, app_id: str, user_id: str) -> bool:
        return self._enqueue(self._announce("t", app_id, user_id))

    def cache_set(self, app_id: str, channel: str, event: str, data: str, ttl: float, version: CacheVersion) -> None:
        keys, args = self._cache_write(app_id, channel, event, data, ttl, version)

        def store(commands: _Commands) -> None:
            # Stored or not (a newer event is), the newest is what Redis keeps: nothing follows from the answer.
            commands.script(self._cache_script, keys, args, lambda stored: None)
            commands.pipe.delete(self._key("cache-missed", app_id, channel))  # filled: the next miss is news again
            self._announce("c", app_id, channel, event, data, ttl, version[0])(commands)

        self._enqueue(store)

    def _cache_write(
        self, app_id: str, channel: str, event: str, data: str, ttl: float, version: CacheVersion
    ) -> tuple[list[str], list[str | int]]:
        """The keys and arguments of the cache script storing ``channel``'s event for ``ttl`` seconds."""
        keys = [self._key("cache", app_id, channel), self._key("cache-version", app_id, channel)]
        return keys, [json.dumps([channel, event, data]), *version, max(1, int(ttl * 1000))]

    def cache_missed(self, app_id: str, channel: str) -> None:
        """One cache_miss webhook per channel per CACHE_MISS_INTERVAL across the cluster: the node that sets the
        key first sends it."""

        def claim(commands: _Commands) -> None:
            key = self._key("cache-missed", app_id, channel)
            commands.pipe.set(key, str(self.node_id), px=int(CACHE_MISS_INTERVAL * 1000), nx=True)
            commands.then(claimed)

        def claimed(first: bool | None) -> None:
            if first:
                self._states[app_id].webhooks.emit({"name": "cache_miss", "channel": channel})

        if not self._enqueue(claim):  # Redis is away: this node decides alone, as it does of presence
            claimed(True)

    # -- webhook counters -------------------------------------------------------------------------------------

    def _count(
        self,
        commands: _Commands,
        counter: str,
        pending: str,
        field_name: str,
        delta: int,
        app_id: str,
        node: int,
        held: tuple[str, str],
        event: dict[str, object],
        delay: float,
        quiet: bool,
        limit: int | None = None,
        then: Callable[[int | None], None] = _ignore,
    ) -> None:
        """Queue a move of a counter by ``delta`` for ``node``, with the field ``held`` of its state (set on +1,
        deleted on -1); once Redis has answered, act on the script's answer and pass it to ``then``: send ``event`` on
        0→1 (unless ``quiet``), hold it on 1→0 (to send ``delay`` seconds later unless a return cancels it). None:
        not counted, Redis lost its data. ``limit``: a +1 of a field the counter does not have is refused
        (``_REFUSED``, nothing counted) once the counter has that many fields."""
        delay_ms = int(delay * 1000)
        hold_ms = delay_ms + 30_000
        batch = commands.batch
        if batch is None:  # a reconciliation or a settlement, run once
            self._batches += 1
            number, tag = 0, f"x{self._batches}"
        else:
            batch.counts += 1
            number = batch.counts
            if number in batch.answered:  # done in the failed run, and its webhook sent or held then
                commands.known(batch.answered[number], then)
                return
            tag = f"{batch.number}.{number}"
        result_key = self._key("counted", self.node_id, self._instance, tag)
        # The same in a retried run (same result key), so the hold the first run made is the one released.
        hold = json.dumps([result_key, app_id, event]) if delta < 0 else ""
        nodestate, holds, generation = self._key("nodestate", node), self._key("holds", app_id), self._key("generation")
        keys = [counter, pending, nodestate, result_key, holds, generation]
        args: list[str | int] = [field_name, delta, hold_ms, *held, delay_ms, hold, self._counting_in]
        args.append("" if limit is None else limit)
        sent_at = asyncio.get_running_loop().time()
        self._unanswered.setdefault(result_key, (sent_at, app_id, pending, event, hold, delay, quiet))

        def answered(result: int) -> None:
            counted: int | None = result
            if result == _NOT_COUNTED:
                self._unanswered.pop(result_key, None)
                self._unreconciled = True  # the next heartbeat registers again, and restores
                counted = None
            else:
                waiting = self._unanswered.pop(result_key, None) is not None  # else a reconciliation acted on it
                if waiting and self._looked_up.pop(result_key, None) is None:  # nor did one before this retry
                    self._webhook(app_id, 0 if quiet else result, pending, event, hold, delay)
            if batch is not None:
                batch.answered[number] = counted
            then(counted)

        commands.script(self._count_script, keys, args, answered)

    def _count_channel(
        self,
        commands: _Commands,
        app_id: str,
        channel: str,
        delta: int,
        node: int | None = None,
        *,
        quiet: bool = False,
        delay: float | None = None,
    ) -> None:
        """Queue the count of ``channel`` in (+1) or out (-1) for ``node`` (this one by default). ``quiet``: without the
        channel_occupied webhook (it was sent before Redis lost the count); ``delay``: the hold's, for the app's
        webhook delay."""
        pending = self._key("vacating", app_id, channel)
        held = (_occupied_field(app_id, channel), "1")
        event: dict[str, object] = {"name": "channel_occupied" if delta > 0 else "channel_vacated", "channel": channel}
        delay = self._webhook_delay(app_id) if delay is None else delay
        counter = self._key("occ", app_id)
        node_counted = self.node_id if node is None else node

        def counted(result: int | None) -> None:
            if result is not None and node_counted == self.node_id:
                if delta > 0:
                    self._counted.occupied.add((app_id, channel))
                    self._send_awaiting(app_id, channel)
                else:
                    self._counted.occupied.discard((app_id, channel))
                    if (app_id, channel) in self._awaiting_channel:  # no count of it is coming now
                        self._send_awaiting(app_id, channel, every=True)

        self._count(
            commands, counter, pending, channel, delta, app_id, node_counted, held, event, delay, quiet, then=counted
        )

    def _count_member(
        self,
        commands: _Commands,
        app_id: str,
        channel: str,
        user_id: str,
        delta: int,
        info: str = "",
        node: int | None = None,
        *,
        quiet: bool = False,
        delay: float | None = None,
        limit: int | None = None,
        then: Callable[[int | None], None] = _ignore,
    ) -> None:
        """As :meth:`_count_channel`, for a presence member (``info``: its user_info JSON, stored on +1); ``then``
        gets the count's answer, None if Redis lost its data. ``limit``: the channel's member limit, for an admission
        (the answer is then ``_REFUSED`` if the counter is full without the user, and nothing is counted)."""
        pending = self._key("leaving", app_id, channel, user_id)
        held = (_member_field(app_id, channel, user_id), info)
        counter = self._key("mem", app_id, channel)
        name = "member_added" if delta > 0 else "member_removed"
        event: dict[str, object] = {"name": name, "channel": channel, "user_id": user_id}
        delay = self._webhook_delay(app_id) if delay is None else delay
        node_counted = self.node_id if node is None else node

        def counted(result: int | None) -> None:
            if result is not None and result != _REFUSED and node_counted == self.node_id:
                if delta > 0:
                    self._counted.members[(app_id, channel, user_id)] = info
                    if (app_id, channel) in self._awaiting_channel:  # the member's client events
                        self._send_awaiting(app_id, channel)
                else:
                    self._counted.members.pop((app_id, channel, user_id), None)
                    if (app_id, channel) in self._awaiting_channel:  # no count of the member is coming now
                        self._send_awaiting(app_id, channel, user_id)
            then(result)

        self._count(
            commands, counter, pending, user_id, delta, app_id, node_counted, held, event, delay, quiet, limit, counted
        )

    def _webhook_delay(self, app_id: str) -> float:
        """How long a departure of ``app_id`` is held. 0 for an app this node does not serve (it settles a buried
        node's counters of every app, and the app's delay is not known here): nodes whose app lists differ, as in a
        rolling deploy, leave the hold in Redis, where the sweep of a node serving the app takes it, HOLD_GRACE_SECONDS
        past its time, and a client coming back meanwhile still cancels it."""
        state = self._states.get(app_id)
        return 0.0 if state is None else state.app.webhook_delay

    def _webhook(
        self, app_id: str, result: int, pending: str, event: dict[str, object], hold: str, delay: float
    ) -> None:
        state = self._states.get(app_id)
        if state is None:  # a settled departure of an app this node does not serve: held in Redis for the sweep
            return
        channel = str(event["channel"])
        if result == 1:
            if event["name"] == "member_added":
                # A join is admitted (its user counted) before its subscription counts the channel
                self.after_channel_counted(app_id, event)
            else:
                state.webhooks.emit(event)
        elif result == -1:
            if event["name"] == "member_removed":  # its connection left before the channel was counted
                self._send_awaiting(app_id, channel, str(event["user_id"]))
            stale = self._held.pop(pending, None)
            if stale is not None:  # a hold this node made before, cancelled since by a return: its timer must not run
                stale[0].cancel()
            handle = asyncio.get_running_loop().call_later(delay, self._release_now, pending, app_id, event, hold)
            self._held[pending] = (handle, app_id, event, hold)

    def after_channel_counted(
        self, app_id: str, event: dict[str, object], member: str | None = None, *, held: bool = True
    ) -> None:
        """Send ``event``, of a channel this node holds, once Redis has answered this node's count of the channel (and
        of ``member``'s presence in it): the channel's channel_occupied and the member's member_added, if this node
        sends them, go first, as on a single node. While Redis is away nothing is counted, and it goes at once.

        Of a channel this node no longer holds (``held`` false) no count may be coming: it goes at once, unless
        webhooks of the channel still wait (the node left it before Redis counted it in), which it must not pass (a
        presence leave its enter): it goes with them, once Redis counts the channel in or out."""
        channel = (app_id, str(event["channel"]))
        unheld = not held and channel not in self._awaiting_channel
        if unheld or self._counted_for(channel, member) or not self._accepting:
            self._states[app_id].webhooks.emit(event)
        else:
            self._awaiting_channel.setdefault(channel, []).append((event, member))

    def _counted_for(self, channel: tuple[str, str], member: str | None) -> bool:
        return channel in self._counted.occupied and (member is None or (*channel, member) in self._counted.members)

    def _send_awaiting(
        self,
        app_id: str,
        channel: str,
        user_id: str | None = None,
        *,
        every: bool = False,
        before: Mapping[int, tuple[dict[str, object], str | None]] | None = None,
    ) -> None:
        """Send the webhooks waiting for ``channel``'s counts that have been answered; with ``user_id``, that user's
        alone (its connection left before they were), with ``every``, all of them; with ``before`` (waiting entries
        by id), those too."""
        key = (app_id, channel)

        def due(entry: tuple[dict[str, object], str | None]) -> bool:
            event, member = entry
            if user_id is not None:
                return event.get("user_id") == user_id
            return every or self._counted_for(key, member) or (before is not None and before.get(id(entry)) is entry)

        kept: list[tuple[dict[str, object], str | None]] = []
        for entry in self._awaiting_channel.pop(key, []):
            if due(entry):
                self._states[app_id].webhooks.emit(entry[0])
            else:
                kept.append(entry)
        if kept:
            self._awaiting_channel[key] = kept

    def _send_every_awaiting(self) -> None:
        for app_id, channel in list(self._awaiting_channel):
            self._send_awaiting(app_id, channel, every=True)

    def _release_now(self, pending: str, app_id: str, event: dict[str, object], hold: str) -> None:
        self._enqueue(self._release(app_id, pending, event, hold))

    def _release(self, app_id: str, pending: str, event: dict[str, object], hold: str) -> Operation:
        def release(commands: _Commands) -> None:
            commands.script(self._release_script, [pending, self._key("holds", app_id)], [hold], released)

        def released(deleted: int) -> None:
            if deleted == 1:
                self._states[app_id].webhooks.emit(event)
            if pending in self._held and self._held[pending][3] == hold:  # sent, or cancelled or taken by another
                del self._held[pending]

        return release

    def _release_overdue(self) -> None:
        """Release again the holds whose timers ran while their release could not reach Redis (it was dropped)."""
        now = asyncio.get_running_loop().time()
        for pending, (handle, app_id, event, hold) in list(self._held.items()):
            if handle.when() <= now:
                self._release_now(pending, app_id, event, hold)

    async def _sweep(self) -> None:
        """Send the held webhooks that their own node did not release in time (it was killed, or could not reach
        Redis when its timer ran): each node looks every HOLD_SWEEP_SECONDS, and the script gives each to one."""
        while True:
            await asyncio.sleep(HOLD_SWEEP_SECONDS)
            await self._connected.wait()
            # Redis away or a dropped connection: the heartbeat deals with it, and the holds wait for the next look.
            with contextlib.suppress(RedisError, OSError):
                await self._take_overdue_holds()

    async def _take_overdue_holds(self, *, every: bool = False) -> None:
        """Take the holds of this node's apps due more than the grace ago (``every``: all of them) and send them."""
        args = [int(HOLD_GRACE_SECONDS * 1000), _SWEEP_LIMIT, "every" if every else "due"]
        keys = [self._key("holds", app_id) for app_id in self._states]
        while True:
            taken: list[str] = await self._sweep_script(keys=keys, args=args)
            for hold in taken:
                try:
                    _, app_id, event = json.loads(hold)
                    state = self._states[app_id]
                except (ValueError, TypeError, KeyError):
                    log.warning("held webhook dropped: unreadable: %.200r", hold)
                    continue
                state.webhooks.emit(event)
            if len(taken) < _SWEEP_LIMIT:
                return

    # -- background tasks -------------------------------------------------------------------------------------

    async def _write(self) -> None:
        """Run queued operations in order, in batches of one round trip each (see _run), reconnecting after a Redis
        failure."""
        while True:
            queued = [await self._queue.get()]
            while not self._queue.empty():
                queued.append(self._queue.get_nowait())
            await self._connected.wait()
            operations = [operation for epoch, operation in queued if epoch == self._epoch]
            if len(operations) < len(queued):
                self.lost_operations += len(queued) - len(operations)
                self._decide_alone(stale_only=True)
            counts, self._dirty_counts = self._dirty_counts, {}
            self._batches += 1
            batch = _Batch(self._batches)
            try:
                await self._run(batch, operations, counts)
            except (RedisError, OSError) as exc:
                await self._failed(batch, operations, counts, exc)
            finally:
                for _ in queued:
                    self._queue.task_done()

    async def _run(
        self, batch: _Batch, operations: list[Operation], counts: Mapping[tuple[str, str | None], int]
    ) -> None:
        """One round trip for the batch's commands, count scripts and all (and one more if acting on an answer
        queues commands): a burst of presence joins does not hold up the publishes queued behind it."""
        batch.counts = 0
        async with self._redis.pipeline(transaction=False) as pipe:
            commands = _Commands(pipe, batch, self._send)
            for operation in operations:
                operation(commands)
            self._flush_counts(pipe, counts)
            await commands.run()

    async def _send(self, pipe: Any) -> list[Any]:
        """One round trip: run the pipeline's commands, and return their replies (a command's error as its reply)."""
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def _failed(
        self,
        batch: _Batch,
        operations: list[Operation],
        counts: Mapping[tuple[str, str | None], int],
        exc: BaseException,
    ) -> None:
        """A batch failed. A dropped connection (an idle timeout, a CLIENT KILL) with Redis still there: run it once
        more on a fresh connection; each operation may run twice (a count answers what its first run did, a publish is
        delivered once by its sequence number, the node's own state is written again; a release or a cache_miss claim
        whose reply was lost answers "already done" the second time, and its webhook is not sent). Otherwise its
        operations are lost: reconcile Redis with what this node holds, or, if Redis is gone, wait for it (the
        reconnection reconciles)."""
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)) and await self._reachable():
            try:
                await self._run(batch, operations, counts)
                return
            except (RedisError, OSError) as again:
                exc = again
        self.lost_operations += len(operations)
        self._decide_alone()  # the lost batch's among them; before the reconciliation, which counts what they leave
        for key, count in counts.items():  # announced by the reconciliation's snapshot, or after the outage
            self._dirty_counts.setdefault(key, count)
        log.warning(
            "%d cluster operation(s) lost to a Redis error (%s); reconciling this node's state in Redis",
            len(operations),
            type(exc).__name__,
        )
        self._unreconciled = True
        if await self._reachable():
            try:
                await self._reconcile(new_epoch=False)
                return
            except (RedisError, OSError) as again:
                exc = again
        await self._recover(exc)  # Redis is back (or was never gone): the next heartbeat reconciles

    async def _reachable(self) -> bool:
        """Whether Redis answers on a fresh connection (the pool's idle ones may all have been dropped with the
        one that failed: an idle timeout closes them all)."""
        with contextlib.suppress(RedisError, OSError):
            await self._redis.connection_pool.disconnect(inuse_connections=False)
            await self._redis.ping()
            return True
        return False

    def _flush_counts(self, pipe: Any, counts: Mapping[tuple[str, str | None], int]) -> None:
        for (app_id, channel), count in counts.items():
            if channel is None:
                field_name, announced = _connections_field(app_id), self._announcement("n", app_id, count)
            else:
                field_name = _SEP.join(("s", app_id, channel))
                announced = self._announcement("s", app_id, channel, count)
            if count > 0:
                pipe.hset(self._key("nodestate", self.node_id), field_name, count)
            else:
                pipe.hdel(self._key("nodestate", self.node_id), field_name)
            pipe.publish(self.bus, announced)

    async def _recover(self, exc: BaseException) -> None:
        """After a failed Redis call: if Redis is really gone, wait for it, then subscribe and register anew."""
        if self._recovering.locked():
            async with self._recovering:
                return
        async with self._recovering:
            if self._connected.is_set():
                with contextlib.suppress(RedisError, OSError):
                    await self._redis.ping()
                    return  # a connection from before an outage that is already over
            self._connected.clear()
            self._accepting = False
            self._decide_alone()
            # The counts they wait for are lost with the epoch; while Redis is away webhooks go at once, and these
            # must not wait for the reconnection (which may never come) nor come after the outage's (best effort:
            # the channel_occupied of a count whose answer was lost may follow, sent by the reconciliation).
            self._send_every_awaiting()
            log.warning("Redis unavailable (%s); serving local subscribers only until it returns", type(exc).__name__)
            delay = 0.1
            while True:
                await asyncio.sleep(delay)
                pubsub = None
                try:
                    # The pool's idle connections are from before the outage: each would fail once, and fail this try.
                    await self._redis.connection_pool.disconnect(inuse_connections=False)
                    pubsub = await self._subscribe()
                    await self._register()
                except (RedisError, OSError):
                    if pubsub is not None:  # its subscription would stay on Redis, one more per failed try
                        with contextlib.suppress(RedisError, OSError):
                            await pubsub.aclose()
                    delay = min(delay * 2, self.settings.reconnect_max)
                    continue
                stale, self._pubsub = self._pubsub, pubsub
                with contextlib.suppress(RedisError, OSError):
                    await stale.aclose()
                self._rejoined_at = asyncio.get_running_loop().time()
                log.warning("Redis is back; cross-node delivery resumed")
                return

    async def _listen(self) -> None:
        while True:
            pubsub = self._pubsub
            try:
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        try:
                            self._receive(message["data"])
                        except Exception:  # one message this node cannot read must not end its listening
                            log.exception("unreadable cluster message dropped: %.200r", message["data"])
            except (RedisError, OSError) as exc:
                if pubsub is self._pubsub:
                    await self._recover(exc)
                if pubsub is self._pubsub:  # Redis is fine, only this subscription broke
                    with contextlib.suppress(RedisError, OSError):
                        self._pubsub = await self._subscribe()
                        await pubsub.aclose()
                        log.warning(
                            "the Redis bus subscription dropped (%s) and is back: what other nodes published "
                            "meanwhile did not reach this node (see relay_cluster_missed_messages_total)",
                            type(exc).__name__,
                        )
                        # What the others announced meanwhile is lost (Redis drops a subscriber that reads too
                        # slowly, and counts are only sent when they change): read their stored state again, and
                        # the cache channels' events and the keyed publishes, which Redis keeps.
                        for node in await self._live_nodes():
                            if node != self.node_id:
                                self._enqueue(self._resync(node))
                        await self._load_cache()
                        await self._load_published()
                        await self._load_nonces()
                        self._announce_unechoed_counts()

    def _announce_unechoed_counts(self) -> None:
        """This node's count announcements published while its bus subscription was down never came back to it, and
        a subscription_count webhook is sent on that echo (AppState.subscription_count_echoed): announce again each
        count the bus has not echoed as it is now."""
        for app_id, state in self._states.items():
            for name, count in state.unechoed_subscription_counts().items():
                self._dirty_counts[(app_id, name)] = count
        self._enqueue(_nothing)

    async def _heartbeat(self) -> None:
        interval = self.settings.node_ttl / 3
        while True:
            await asyncio.sleep(interval)
            await self._connected.wait()
            try:
                await self._beat()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                # A dropped connection (an idle timeout closes the pool's connections between two beats): beat again
                # on a fresh one if Redis is there, rather than miss a beat.
                if not await self._reachable():
                    await self._recover(exc)
                    continue
                try:
                    await self._beat()
                except (RedisError, OSError) as again:
                    await self._recover(again)
            except RedisError as exc:
                await self._recover(exc)

    async def _beat(self) -> None:
        await self._redis.set(self._key("node", self.node_id), _MARKS_ITS_STATE, px=int(self.settings.node_ttl * 1000))
        if not await self._redis.sismember(self._key("nodes"), str(self.node_id)):
            # Stalled past node_ttl (a paused VM, a half-open connection): the others buried this node and
            # settled what it held. Join again, as after an outage, so they see its members once more.
            log.warning("this node was taken for dead by the cluster; registering again")
            await self._register()
        elif self._unreconciled:  # operations were lost, and so was the reconciliation after them
            await self._reconcile(new_epoch=False)
        if asyncio.get_running_loop().time() - self._rejoined_at < self.settings.node_ttl:
            # Back from an outage: the others may not be back yet (a restarted Redis lost their heartbeats and node
            # set). They are gone only if they stay away past node_ttl, as during the outage.
            return
        alive = set(await self._live_nodes())
        for node in [int(n) for n in await self._redis.smembers(self._key("nodes"))]:
            if node not in alive and node != self.node_id:
                await self._bury(node)
        for node in self._known_nodes - alive - {self.node_id}:
            self._forget(node)

    async def _bury(self, node: int) -> None:
        """A node's heartbeat expired: whoever removes it from the node set settles its webhook counters."""
        settled_here = await self._redis.srem(self._key("nodes"), node) == 1
        if settled_here:
            log.warning("node %s stopped sending heartbeats; removing its members", node)
            await self._settle(node, await self._node_state(node))
        self._forget(node, settled_here=settled_here)

    async def _settle(self, node: int, held: NodeState) -> None:
        """Count ``node``'s channels and members out of the webhook counters, of every app, those this node does not
        serve too: its state is deleted after, so no other node would (their departures are held in Redis for a node
        that serves the app, see :meth:`_webhook_delay`)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            counts = _Commands(pipe, None, self._send)
            for app_id, channel, user_id in held.members:
                self._count_member(counts, app_id, channel, user_id, -1, node=node)
            for app_id, channel in held.occupied:
                self._count_channel(counts, app_id, channel, -1, node=node)
            await counts.run()
        await self._redis.delete(self._key("nodestate", node))

    def _forget(self, node: int, *, settled_here: bool = False) -> None:
        self._known_nodes.discard(node)
        self._last_published.pop(node, None)
        for state in self._states.values():
            state.forget_node(node, settled_here=settled_here)

    # -- incoming ---------------------------------------------------------------------------------------------

    def _receive(self, data: str) -> None:
        if data[:1] in _PUBLISHES:  # P and C with a Pusher frame, A with an Ably publish's frames and message
            kind, sender, app_id, channel, exclude, units, body = data.split(_SEP, 6)
            node_text, _, number_text = sender.partition(".")
            node, number = int(node_text), int(number_text)
            last = self._last_published.get(node)
            if node == self.node_id or (last is not None and number <= last):
                return
            if last is not None:
                self.missed_messages += number - last - 1
            self._last_published[node] = number  # for every app: a node's numbers run across the apps it serves
            state = self._states.get(app_id)
            if state is None:
                return
            if kind != "A":
                state.deliver_remote(channel, encode_text(body), exclude or None, int(units), client_event=kind == "C")
                return
            publish = _unpack(body)
            origin: object = Outbound(publish["fields"])  # the first event carries the whole message
            publisher = publish["fields"].get("connectionId")  # its echo, if that connection is here, is metered
            client_event = publish.get("client_event", False)
            for text, unit in zip(publish["texts"], units.split(","), strict=True):
                state.deliver_remote(
                    channel,
                    encode_text(text),
                    exclude or None,
                    int(unit),
                    client_event=client_event,
                    origin=origin,
                    publisher=publisher,
                )
                origin = DELIVERED
            if state.foreign_presence is not None:
                state.foreign_presence.published_elsewhere(channel, publish["fields"])
            return
        kind, node, *args = json.loads(data[1:])
        if node == self.node_id:
            if kind == "s" and (state := self._states.get(args[0])) is not None:
                state.subscription_count_echoed(args[1], args[2])
            return
        if kind == "snapshot":
            self._enqueue(self._resync(node))
            return
        if kind == "bye":
            self._forget(node)
            return
        if kind == "nonce":
            if self.nonce_heard is not None:
                key_name, nonce, timestamp = args
                self.nonce_heard(key_name, nonce, timestamp, NONCE_KEPT_MS)
            return
        state = self._states.get(args[0])
        if state is None:
            return
        self._known_nodes.add(node)
        if kind == "s":
            state.remote_subscriptions(node, args[1], args[2])
        elif kind == "n":
            state.remote_connection_count(node, args[1])
        elif kind == "m+":
            state.remote_member_joined(node, args[1], args[2], args[3])
        elif kind == "m-":
            state.remote_member_left(node, args[1], args[2])
        elif kind == "u":
            state.remote_user(node, args[1], args[2])
        elif kind == "t":
            state.terminate_local_user(args[1])
        elif kind == "c":
            # A node of an earlier release sends no version: its event is older than any versioned one. The node that
            # published it is the sender, unless named (a reconciliation announces the events it holds)
            milliseconds = args[5] if len(args) > 5 else 0
            published_by = args[6] if len(args) > 6 else node
            state.cache_store(args[1], args[2], args[3], args[4], (milliseconds, int(published_by)))
        elif kind == "k":
            _remember_published(state, args[1], args[2], args[3])
        elif kind == "a" and state.foreign_presence is not None:
            state.foreign_presence.remote_presence(node, args[1], _unpack(args[2]))

    def _resync(self, node: int) -> Operation:
        """Read ``node``'s stored state again (it announced its snapshot, or this node's bus subscription dropped and
        what ``node`` announced meanwhile is lost) and take it for what ``node`` holds, if it is known (see
        :func:`_written_state`): a state not written whole since Redis lost its data keeps what this node knew of
        ``node``, whose snapshot comes once it is written."""

        def resync(commands: _Commands) -> None:
            read: dict[str, str | None] = {}  # no beat if its GET failed: only a marked state is taken then
            commands.pipe.get(self._key("node", node))
            commands.then(lambda beat: read.update(beat=beat))
            commands.pipe.hgetall(self._key("nodestate", node))
            commands.then(lambda fields: self._resynced(node, read.get("beat"), fields))

        return resync

    def _resynced(self, node: int, beat: str | None, fields: Mapping[str, str]) -> None:
        held = _written_state(beat, fields, empty_holds_nothing=True)
        if held is not None:
            self._apply_snapshot(node, held)

    def _apply_snapshot(self, node: int, held: NodeState) -> None:
        """Replace what this node believes ``node`` holds with ``held``, sending only the differences."""
        self._known_nodes.add(node)
        for state in self._states.values():
            state.apply_snapshot(node, held.holding(state.app.app_id))

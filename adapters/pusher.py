"""Pusher Channels, hosted or self-hosted (the Relay emulator, soketi, Reverb): the Pusher HTTP API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import nacl.secret
import nacl.utils

from relay.adapters.base import (
    Call,
    Capability,
    HttpRequest,
    HttpResponse,
    calls_of,
    count_of,
    path_segment,
    refuse_replayed_webhook,
    server_name,
    unreadable_answer,
    unsupported,
    webhook_bytes,
    webhook_event,
    webhook_json,
    webhook_milliseconds,
)
from relay.config import ProviderConfig, is_hosted_pusher
from relay.errors import (
    ConfigError,
    IdempotencyKeyReused,
    InvalidChannelName,
    LimitExceeded,
    ProtocolError,
    RelayError,
    UnknownKey,
)
from relay.http_errors import error_for_status, parse_retry_after
from relay.models import ChannelInfo, Event, PresenceMember, PublishResult, User, WebhookEvent, integer_id_as_digits
from relay.payload import Payload
from relay.protocol.channels import (
    DEFAULT_LIMITS,
    HOSTED_PUSHER_LIMITS,
    ChannelKind,
    Limits,
    classify,
    server_to_user_channel,
    validate_channel_name,
)
from relay.protocol.frames import dumps, refuse_lone_surrogates
from relay.protocol.idempotency_keys import REPLAYED_HEADER
from relay.protocol.members import parse_channel_data, parse_user_data
from relay.protocol.signing import (
    authorize_channel,
    encrypted_shared_secret,
    sign_rest_request,
    user_auth,
    verify_webhook_signature,
)
from relay.protocol.socket_ids import validate_socket_id

_REPLAYED = REPLAYED_HEADER.lower()  # as the senders give an answer's headers
# Hosted Pusher's 400 for info=subscription_count when the app has not enabled subscription counting (off by default):
# "Cannot retrieve the subscription count because subscription counting is not enabled"
_SUBSCRIPTION_COUNTING_OFF = re.compile(r"subscription counting is not enabled", re.IGNORECASE)


# What pusher-http-node and pusher-http-python send as it is in a request's path, and so sign as sent: a channel
# name's '=', '@', ',' and ';', and what else a user id may hold that a URL's path keeps (RFC 3986's sub-delimiters,
# ':', and '|' as WHATWG URLs keep it). Anything else is percent-encoded, and the path is signed decoded, as theirs
# is (node's fetch encodes the path after signing; the emulator verifies either form).
_SENT_AS_IS = "=@,;:!$&'()*+|"


def sent_path(path: str) -> str:
    """``path`` as the request line carries it: each segment percent-encoded but for what the official SDKs send
    unencoded, a dot-only segment encoded."""
    return "/".join(path_segment(segment, _SENT_AS_IS) for segment in path.split("/"))


def check_encrypted_targets(channels: Sequence[str], master_key: bytes | None) -> None:
    """An encrypted channel's data is encrypted with that channel's key, derived from the master key: it cannot share
    a publish, and it cannot be published without the master key."""
    encrypted = [name for name in channels if classify(name) is ChannelKind.ENCRYPTED]
    if encrypted and len(channels) > 1:
        raise ProtocolError("encrypted channels must be published to one at a time")
    for name in encrypted:
        required_master_key(name, master_key)


def required_master_key(channel: str, master_key: bytes | None) -> bytes:
    """``master_key``, which the encrypted ``channel`` needs (to encrypt its data, to sign its subscriptions)."""
    if master_key is None:
        raise ConfigError(
            f"{channel!r} is end-to-end encrypted: add ?encryption_master_key=BASE64 (32 bytes) to the URL"
        )
    return master_key


def user_channel(user_id: object, limits: Limits = DEFAULT_LIMITS) -> str:
    """The ``#server-to-user-`` channel of ``user_id`` (an int is its digits, as a signed-in user's id is): an id it
    cannot carry ('/', '?', spaces, over the length) is refused, so it can neither reshape a request's path nor be
    recorded as done."""
    user_id = integer_id_as_digits(user_id)
    if not isinstance(user_id, str):
        raise InvalidChannelName(f"a user id must be a string (or an int, taken as its digits), got {user_id!r}")
    return server_to_user_channel(user_id, limits)


def terminated_user(user_id: object) -> str:
    """``user_id`` (an int as its digits, as a signed-in user's id is), if ``terminate_connections`` can name it: any
    id a user signs in with (1 to 128 characters; it needs no channel, so ``auth0|123`` is one), but for ``/``, which
    a proxy may decode out of ``%2F`` and so send the request to another path."""
    user_id = integer_id_as_digits(user_id)
    if not isinstance(user_id, str) or not user_id:
        raise InvalidChannelName(
            f"a user id must be a non-empty string (or an int, taken as its digits), got {user_id!r}"
        )
    refuse_lone_surrogates(user_id, "user id", InvalidChannelName)
    longest = DEFAULT_LIMITS.max_user_id_length
    if len(user_id) > longest or "/" in user_id:
        raise InvalidChannelName(
            f"user id {user_id[:50]!r} cannot be used: a user signs in with 1 to {longest} characters, and one with "
            "'/' cannot go in the terminate_connections path"
        )
    return user_id


def presence_channel(channel: str) -> str:
    """``channel``, if members can be listed: only presence channels have them."""
    if classify(channel) is not ChannelKind.PRESENCE:
        raise InvalidChannelName(f"{channel!r} is not a presence channel")
    return channel


def _server_name(config: ProviderConfig) -> str:
    """Who answered, as errors name it: a pusher:// URL (or PUSHER_HOST) may point at soketi, Reverb or an emulator,
    whose refusals are not hosted Pusher's, so such a server is named by its address."""
    if config.scheme == "emulator":
        return "the Relay emulator"
    return server_name("Pusher", is_hosted_pusher, config)


# pusher-js asks for each subscription's signature on its own, bound to its socket id
UNSUPPORTED_HINTS: Mapping[Capability, str] = {
    Capability.CHANNELS_TOKEN: "pusher-js authorizes each channel on its own: use authorize_channel (channel_name)",
}

# The advice for a 404 from an address that serves no Pusher HTTP API (PusherAdapter._no_pusher_api_at)
_NO_PUSHER_API = (
    "no Pusher HTTP API there: check the port and any path prefix in the provider URL; the emulator listens on 6001 "
    "by default, relay serve (the gateway) on 8000"
)


class PusherAdapter:
    scheme = "pusher"
    capabilities = frozenset(Capability) - UNSUPPORTED_HINTS.keys()
    unsupported_hints = UNSUPPORTED_HINTS
    max_channels_per_publish = DEFAULT_LIMITS.max_channels_per_event
    max_batch_events = DEFAULT_LIMITS.max_batch_events
    webhook_headers = frozenset({"x-pusher-key", "x-pusher-signature"})

    def __init__(self, config: ProviderConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        self.name = _server_name(config)
        self._limits = HOSTED_PUSHER_LIMITS if is_hosted_pusher(config.host) else DEFAULT_LIMITS
        # Set once the provider refused info=subscription_count: this client's channel() then asks without it
        self._subscription_counting_off = False

    # -- requests ---------------------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: object = None, params: Mapping[str, str] | None = None, *, idempotent: bool
    ) -> HttpRequest:
        try:
            raw = b"" if body is None else dumps(body).encode()
            return self._signed(method, path, raw, params, idempotent=idempotent)
        except UnicodeEncodeError as exc:
            # The client refuses such data, names and user ids itself (and ProviderConfig such an app id); this is
            # what reaches here any other way (an adapter called directly). Pusher's servers refuse what UTF-8 cannot
            # encode, so nothing is sent.
            raise ProtocolError(
                f"the request to {self.name} contains a lone UTF-16 surrogate ({exc.object[exc.start : exc.end]!r}), "
                "which UTF-8 cannot encode: a string cut in the middle of a character"
            ) from None

    def _signed(
        self, method: str, path: str, raw: bytes, params: Mapping[str, str] | None, *, idempotent: bool
    ) -> HttpRequest:
        """The request signed now; its ``signed_again`` signs it anew when a retry sends it."""
        prefix = self._config.path_prefix  # as written in the URL, escapes included: sent and signed as it is
        app_path = f"/apps/{self._config.app_id}{path}"
        timestamp = int(self._clock())
        query = sign_rest_request(
            self._config.key,
            self._config.secret,
            method,
            f"{prefix}{app_path}",
            timestamp=timestamp,
            body=raw,
            params=params,
        )
        url = f"{self._config.base_url}{prefix}{sent_path(app_path)}?{urlencode(query)}"
        headers = {"Content-Type": "application/json"} if raw else {}
        return HttpRequest(
            method,
            url,
            headers,
            raw,
            idempotent,
            lambda: self._signed(method, path, raw, params, idempotent=idempotent),
        )

    def _json(self, response: HttpResponse | None, *, changes: bool = False) -> Any:
        assert response is not None
        try:
            return json.loads(response.body) if response.body else {}
        except ValueError:
            raise unreadable_answer(self.name, response, "invalid JSON", changes=changes) from None

    def _object(self, response: HttpResponse | None, *, changes: bool = False) -> dict[str, Any]:
        """The answer of a request, a JSON object as Pusher's API answers them all (``{}`` for an empty body);
        ``changes``: the request changes something (a publish), as ``unreadable_answer`` takes it."""
        body = self._json(response, changes=changes)
        if not isinstance(body, dict):
            assert response is not None
            raise unreadable_answer(self.name, response, "JSON that is not an object", changes=changes)
        return body

    def check_channel(self, name: object) -> str:
        return validate_channel_name(name, self._limits)

    def check_socket_id(self, socket_id: object) -> str:
        return validate_socket_id(socket_id)

    def error_for(self, response: HttpResponse) -> RelayError:
        text = response.body.decode("utf-8", "replace").strip()
        try:
            parsed = json.loads(text)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
                text = parsed["error"]
        except ValueError:
            pass
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        # The emulator answers 422 to one thing only: an idempotency key resent with another publish
        reused = IdempotencyKeyReused if response.status == 422 and self._config.scheme == "emulator" else None
        no_api_at = self._no_pusher_api_at(response.status, text)
        return error_for_status(
            self.name if no_api_at is None else f"the server at {no_api_at}",
            response.status,
            text[:500] or "(empty body)",
            retry_after=retry_after,
            error_class=reused,
            advice=None if no_api_at is None else _NO_PUSHER_API,
        )

    def _no_pusher_api_at(self, status: int, text: str) -> str | None:
        """The address of a self-hosted server whose 404 names no app: it serves no Pusher-protocol API there, such as
        the gateway's port (8000) given for the emulator's (6001). That was "the Relay emulator answered 404: Not Found
        (check the app id and host in the provider URL)", naming the wrong server and the wrong thing to check."""
        if status != 404 or is_hosted_pusher(self._config.host):
            return None
        generic = text.lower() in ("", "not found", "404 not found", "404 page not found") or text.startswith("<")
        if not (generic or text.startswith("no route for ")):  # the emulator's own, for a path prefix it lacks
            return None
        return f"{self._config.base_url}{self._config.path_prefix}"

    # -- operations -------------------------------------------------------------------------------------------

    def check_publish_channels(self, channels: Sequence[str]) -> None:
        check_encrypted_targets(channels, self._config.encryption_master_key)

    def publish(
        self,
        channels: Sequence[str],
        event: str,
        payload: Payload,
        socket_id: str | None,
        idempotency_key: str | None = None,
    ) -> Call[PublishResult]:
        self.check_publish_channels(channels)  # its data is encrypted for channels[0] alone
        nonce_seed = self._nonce_seed(idempotency_key, event)
        body: dict[str, object] = {
            "name": event,
            "channels": list(channels),
            "data": self._encrypt(channels[0], payload.text, nonce_seed),
        }
        if socket_id is not None:
            body["socket_id"] = socket_id
        request = self._keyed_request("/events", body, idempotency_key)
        return Call(request, lambda response: self._published(response, tuple(channels)))

    def _keyed_request(self, path: str, body: object, idempotency_key: str | None) -> HttpRequest:
        """A publish: Pusher's HTTP API has no idempotency (the client remembers the key), but the emulator dedupes a
        resend of an ``idempotency_key`` parameter for 2 minutes, from any process, as Ably does a message id. Such a
        request is then safe to send again (the sender may retry it); hosted Pusher, soketi and Reverb (pusher://) do
        not know the parameter. An encrypted channel's data is then encrypted with a nonce derived from the key
        (:meth:`_nonce_seed`), so that another process's resend is the same body."""
        sent_key = self._emulator_key(idempotency_key)
        if sent_key is None:
            return self._request("POST", path, body, idempotent=False)
        return self._request("POST", path, body, {"idempotency_key": sent_key}, idempotent=True)

    def _emulator_key(self, idempotency_key: str | None) -> str | None:
        """The key the request carries: only the emulator dedupes one."""
        return idempotency_key if self._config.scheme == "emulator" else None

    def _published(self, response: HttpResponse | None, channels: tuple[str, ...]) -> PublishResult:
        """``replayed`` when the emulator answered a resend of a keyed publish with the first one's answer."""
        self._object(response, changes=True)
        assert response is not None
        return PublishResult(channels, replayed=response.headers.get(_REPLAYED) == "true")

    def batch_parts(self, events: Sequence[tuple[Event, Payload]]) -> list[Sequence[tuple[Event, Payload]]]:
        """``events`` in the calls they are published in: ``max_batch_events`` a call (each event is within the size
        limit, and so are ten of them within a server's request limit)."""
        return calls_of(events, self.max_batch_events)

    def publish_batch(
        self, events: Sequence[tuple[Event, Payload]], idempotency_key: str | None = None, first: int = 0
    ) -> Call[PublishResult]:
        batch = []
        part_key = None if idempotency_key is None else f"{idempotency_key}:{first}"
        for index, (event, payload) in enumerate(events):
            data = self._encrypt(event.channel, payload.text, self._nonce_seed(part_key, f"{index}\0{event.name}"))
            item: dict[str, object] = {"name": event.name, "channel": event.channel, "data": data}
            if event.socket_id is not None:
                item["socket_id"] = event.socket_id
            batch.append(item)
        # Each part under its own key, numbered by its first event as the Ably adapter's message ids
        request = self._keyed_request("/batch_events", {"batch": batch}, part_key)
        return Call(request, lambda response: self._published(response, tuple(e.channel for e, _ in events)))

    def _nonce_seed(self, idempotency_key: str | None, event: str) -> bytes | None:
        """What an encrypted event's nonce is derived from when its publish goes to the emulator under an idempotency
        key (None: a random nonce): the key and the event, so that a resend from another process encrypts to the
        same body, which the emulator recognises, while publishes under other keys get other nonces."""
        sent_key = self._emulator_key(idempotency_key)
        return None if sent_key is None else f"{sent_key}\0{event}\0".encode()

    def _encrypt(self, channel: str, data: str, nonce_seed: bytes | None = None) -> str:
        """End-to-end encryption for private-encrypted channels: NaCl secretbox with the channel's derived key.

        With a ``nonce_seed``, the nonce is an HMAC of the seed and the data under the channel's key (a synthetic
        nonce, as SIV modes make one): one nonce is only ever used again for the very same plaintext, which then
        encrypts to the very same ciphertext, so nothing of the key is exposed, as reusing a nonce for two
        plaintexts would."""
        if classify(channel) is not ChannelKind.ENCRYPTED:
            return data
        shared_secret = base64.b64decode(encrypted_shared_secret(channel, self._master_key(channel)))
        if nonce_seed is None:
            nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
        else:
            nonce_key = hashlib.sha256(b"relay synthetic nonce\0" + shared_secret).digest()  # not the cipher's key
            mac = hmac.new(nonce_key, nonce_seed + data.encode(), hashlib.sha256).digest()
            nonce = mac[: nacl.secret.SecretBox.NONCE_SIZE]
        encrypted = nacl.secret.SecretBox(shared_secret).encrypt(data.encode(), nonce)
        return dumps({"nonce": _b64(nonce), "ciphertext": _b64(encrypted.ciphertext)})

    def _master_key(self, channel: str) -> bytes:
        return required_master_key(channel, self._config.encryption_master_key)

    def channel(self, name: str) -> Call[ChannelInfo]:
        """A presence channel's user count, any other channel's subscription count: hosted Pusher answers the latter
        only when the app enabled subscription counting (off by default). Refused once, this client stops asking
        for it, and subscription_count is None."""
        path = f"/channels/{name}"
        presence = classify(name) is ChannelKind.PRESENCE
        asks_count = not presence and not self._subscription_counting_off
        params = {"info": "user_count"} if presence else {"info": "subscription_count"} if asks_count else None
        request = self._request("GET", path, params=params, idempotent=True)

        def parse(response: HttpResponse | None) -> ChannelInfo:
            body = self._object(response)
            occupied = body.get("occupied")
            subscriptions, users = body.get("subscription_count"), body.get("user_count")
            # bool("false") is True, and an answer without "occupied" (an empty 200 from a proxy) is not "unoccupied":
            # what is not Pusher's answer is said, not read as the nearest thing
            if not isinstance(occupied, bool) or any(
                count is not None and count_of(count) is None for count in (subscriptions, users)
            ):
                assert response is not None
                raise unreadable_answer(
                    self.name, response, "what is not a channel {occupied: true|false, subscription_count, user_count}"
                )
            return ChannelInfo(name, occupied, subscriptions, users)

        def without_count(error: RelayError) -> HttpRequest | None:
            if not asks_count or error.http_status != 400 or not _SUBSCRIPTION_COUNTING_OFF.search(error.message):
                return None
            self._subscription_counting_off = True
            return self._request("GET", path, idempotent=True)

        return Call(request, parse, instead=without_count)

    def channels(self, prefix: str) -> Call[dict[str, ChannelInfo]]:
        params = {"filter_by_prefix": prefix} if prefix else {}
        if prefix.startswith("presence-"):
            params["info"] = "user_count"
        request = self._request("GET", "/channels", params=params, idempotent=True)

        def parse(response: HttpResponse | None) -> dict[str, ChannelInfo]:
            listed = self._object(response).get("channels")
            if listed == []:  # Laravel Reverb's none: PHP writes an empty map as a list
                listed = {}
            # A user_count that is no count ("7", -1, true) is not passed on as one, as channel() refuses it
            if not isinstance(listed, dict) or not all(map(_listed_attributes, listed.values())):
                assert response is not None
                raise unreadable_answer(self.name, response, 'what is not {"channels": {name: {attributes}}}')
            return {name: ChannelInfo(name, True, None, attrs.get("user_count")) for name, attrs in listed.items()}

        return Call(request, parse)

    def presence_members(self, channel: str) -> Call[list[PresenceMember]]:
        request = self._request("GET", f"/channels/{presence_channel(channel)}/users", idempotent=True)

        def parse(response: HttpResponse | None) -> list[PresenceMember]:
            users = self._object(response).get("users")
            # An id is a string, or an integer taken as its digits: str() made a member "None" of a null id
            ids = [_member_id(user) for user in users] if isinstance(users, list) else [None]
            if not all(ids):
                assert response is not None
                raise unreadable_answer(self.name, response, 'what is not {"users": [{"id": …}]}')
            return [PresenceMember(user_id) for user_id in ids if user_id]

        return Call(request, parse)

    def send_to_user(self, user_id: str | int, event: str, payload: Payload) -> Call[None]:
        body = {"name": event, "channels": [user_channel(user_id, self._limits)], "data": payload.text}
        request = self._request("POST", "/events", body, idempotent=False)
        return Call(request, self._no_result)

    def terminate_user_connections(self, user_id: str | int) -> Call[None]:
        request = self._request("POST", f"/users/{terminated_user(user_id)}/terminate_connections", {}, idempotent=True)
        return Call(request, self._no_result)

    def _no_result(self, response: HttpResponse | None) -> None:
        self._object(response, changes=True)

    # -- auth and webhooks ------------------------------------------------------------------------------------

    def authorize_channel(self, socket_id: str, channel: str, user: User | None) -> dict[str, Any]:
        channel_data = None
        if classify(channel) is ChannelKind.PRESENCE:
            if user is None:
                raise ProtocolError(f"{channel!r} is a presence channel: authorize it with a user")
            channel_data = dumps({"user_id": user.id, "user_info": dict(user.info)})
            parse_channel_data(channel_data)  # Pusher's limits (128-character id, 1 KB info): refused here, not later
        encrypted = classify(channel) is ChannelKind.ENCRYPTED
        return authorize_channel(
            self._config.key,
            self._config.secret,
            socket_id,
            channel,
            channel_data=channel_data,
            encryption_master_key=self._master_key(channel) if encrypted else None,
        )

    def authorize_channels(self, channels: Sequence[str], user: User | None) -> dict[str, Any]:
        raise unsupported(self, Capability.CHANNELS_TOKEN)

    def authenticate_user(self, socket_id: str, user: User) -> dict[str, Any]:
        fields: dict[str, object] = {"id": user.id}
        if user.info:
            fields["user_info"] = dict(user.info)
        if user.watchlist:
            fields["watchlist"] = list(user.watchlist)
        user_data = dumps(fields)
        # The limits the server holds a signin to: refused here, not by closing the socket
        _, cut = parse_user_data(user_data)
        if cut:  # Pusher would watch the first 100 and tell only the browser (error 4302)
            raise LimitExceeded(
                f"the watchlist has {len(user.watchlist)} user ids; Pusher watches at most "
                f"{DEFAULT_LIMITS.max_watchlist}"
            )
        return {"auth": user_auth(self._config.key, self._config.secret, socket_id, user_data), "user_data": user_data}

    def verify_webhook(self, headers: Mapping[str, str], body: bytes | str) -> list[WebhookEvent]:
        body = webhook_bytes(body)
        lowered = {name.lower(): value for name, value in headers.items()}
        if "x-pusher-key" not in lowered and "x-ably-signature" in lowered:  # an emulator's format = "ably" hook
            raise UnknownKey(
                "webhook X-Pusher-Key is missing: this is an Ably webhook (X-Ably-Signature), which an ably:// URL "
                "verifies; send this provider Pusher's format (the emulator's default, format = \"pusher\")"
            )
        verify_webhook_signature(
            self._config.key,
            self._config.secret,
            supplied_key=lowered.get("x-pusher-key"),
            signature=lowered.get("x-pusher-signature"),
            body=body,
        )
        payload = webhook_json(body, "webhook body")
        try:
            time_ms, events = payload["time_ms"], payload["events"]
        except (KeyError, TypeError):
            raise ProtocolError("webhook body must be {time_ms, events: [...]}") from None
        time_ms = webhook_milliseconds(time_ms, "webhook time_ms")
        if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
            raise ProtocolError("webhook events must be a list of objects")
        refuse_replayed_webhook("webhook time_ms", time_ms, time.time())
        return [
            webhook_event(
                f"webhook events[{index}]",
                event.get("name"),
                event.get("channel"),
                time_ms,
                user_id=event.get("user_id"),
                event=event.get("event"),
                data=event.get("data"),
                socket_id=event.get("socket_id"),
                subscription_count=event.get("subscription_count"),
            )
            for index, event in enumerate(events)
        ]


def _listed_attributes(attributes: object) -> bool:
    """Whether ``attributes`` are a listed channel's, as Pusher's GET /channels gives them: an object, whose
    ``user_count``, when there is one, is a count."""
    if not isinstance(attributes, dict):
        return False
    user_count = attributes.get("user_count")
    return user_count is None or count_of(user_count) is not None


def _member_id(user: object) -> str | None:
    """The id of a member of Pusher's GET /channels/{channel}/users: a non-empty string, or an integer as its digits;
    None for anything else."""
    user_id = integer_id_as_digits(user.get("id")) if isinstance(user, dict) else None
    return user_id if isinstance(user_id, str) and user_id else None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def encrypted_data_length(plaintext_bytes: int) -> int:
    """The length of what ``PusherAdapter`` sends as an encrypted channel's data for a plaintext of that many UTF-8
    bytes (the JSON of the nonce and the ciphertext, in base64): what Pusher's size limit counts."""
    nonce, ciphertext = nacl.secret.SecretBox.NONCE_SIZE, plaintext_bytes + nacl.secret.SecretBox.MACBYTES
    return len('{"nonce":"","ciphertext":""}') + _b64_length(nonce) + _b64_length(ciphertext)

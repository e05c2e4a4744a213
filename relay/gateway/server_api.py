"""The gateway's server API, for holders of RELAY_API_TOKEN: publishing, events to users, channel queries."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from relay.client import AsyncRelay
from relay.errors import InvalidSocketId, ProtocolError, RelayError, about_item
from relay.gateway.guards import check_api_token
from relay.gateway.settings import GatewaySettings
from relay.models import ChannelInfo, Event, PublishResult
from relay.protocol.idempotency_keys import REPLAYED_HEADER
from relay.web import error_response, query_fields


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # No length here: the provider's (164 on hosted Pusher, 200 self-hosted, 2,048 on Ably) is checked as for each of
    # channels, so one name is refused, or published, alike in either field
    channel: str | None = Field(default=None, min_length=1)
    channels: list[str] | None = Field(default=None, min_length=1)
    event: str = Field(min_length=1, max_length=200)
    data: Any
    # checked by the provider's adapter; "" is none, as the library reads it (a missing X-Socket-Id passed on)
    socket_id: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def one_target(self) -> PublishRequest:
        if (self.channel is None) == (self.channels is None):
            raise ValueError("give exactly one of channel or channels")
        return self

    @property
    def targets(self) -> list[str]:
        return [self.channel] if self.channel is not None else list(self.channels or [])


class BatchEventRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(min_length=1)  # its length is the provider's to check, as PublishRequest's
    event: str = Field(min_length=1, max_length=200)
    data: Any
    # checked by the provider's adapter; "" is none, as the library reads it (a missing X-Socket-Id passed on)
    socket_id: str | None = Field(default=None, max_length=200)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[BatchEventRequest] = Field(min_length=1, max_length=1000)


# The socket id of a publish whose body names none, as Laravel's toOthers() reads it: a route handler passing on the
# header the browser sent it (pusher-js's or Echo's socket id) excludes that tab, as the body's socket_id does.
SocketIdHeader = Annotated[
    str | None, Header(description="the socket_id of a publish (of each event, in a batch) whose body gives none")
]


# A publish's key (a route handler's retry sends the same one): a repeat within 2 minutes is not delivered again
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        description="a key of up to 200 printable ASCII characters without spaces (a UUID): a publish repeated with "
        "it within 2 minutes gets the first answer, with Idempotency-Replayed: true, and is not delivered again"
    ),
]


class PublishResponse(BaseModel):
    channels: list[str]
    message_ids: list[str]

    @classmethod
    def of(cls, result: PublishResult, response: Response) -> PublishResponse:
        """The answer to a publish; one replayed for its Idempotency-Key says so in a header, its body the first's."""
        if result.replayed:
            response.headers[REPLAYED_HEADER] = "true"
        return cls(channels=list(result.channels), message_ids=list(result.message_ids))


class UserEventRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str = Field(min_length=1, max_length=200)
    data: Any


class UserResponse(BaseModel):
    user_id: str


class ChannelResponse(BaseModel):
    name: str
    occupied: bool
    subscription_count: int | None = None  # where the provider counts them (Pusher: with subscription counting on)
    user_count: int | None = None  # presence channels


class ChannelsResponse(BaseModel):
    channels: list[ChannelResponse]


class MemberResponse(BaseModel):
    id: str
    info: Any = None  # what the provider tells of the member (Pusher's HTTP API tells nothing)


class MembersResponse(BaseModel):
    users: list[MemberResponse]


def _from_header(error: RelayError, header: str | None) -> RelayError:
    """``error``, saying so when the socket id it refuses came from the X-Socket-Id header: the body had none."""
    if header is not None and isinstance(error, InvalidSocketId) and repr(header) in error.message:
        return about_item(error, "the X-Socket-Id header")
    return error


def _channel_response(info: ChannelInfo) -> ChannelResponse:
    return ChannelResponse(
        name=info.name, occupied=info.occupied, subscription_count=info.subscription_count, user_count=info.user_count
    )


# What GET /v1/channels reads from its query, with the example its OpenAPI parameter shows
CHANNELS_QUERY = {"prefix": "presence-"}


def own_query_fields(request: Request, accepted: Collection[str]) -> dict[str, str]:
    """The query of a route whose parameters are all its own, one it does not read refused: ignored, a Pusher user's
    ``?filter_by_prefix=presence-`` (Pusher's name for ``prefix``) listed every channel. The auth routes read their
    query leniently instead: clients add fields of their own there (pusher-js's ``params``, ably-js's ``authParams``
    and the token params it adds, such as ``clientId``)."""
    fields = query_fields(request, accepted)
    unknown = next((name for name in fields if name not in accepted), None)
    if unknown is not None:
        raise ProtocolError(f"unknown query parameter {unknown!r:.80}: this route reads {', '.join(accepted)}")
    return fields


def query_parameters(example: Mapping[str, str]) -> dict[str, Any]:
    """The OpenAPI query parameters of a route whose handler reads its query itself (a name given twice with two
    values is refused there, which FastAPI's parameters, taking the last, could not do)."""
    parameters = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string", "example": value}}
        for name, value in example.items()
    ]
    return {"parameters": parameters}


def add_server_api_routes(router: APIRouter, settings: GatewaySettings, client: AsyncRelay) -> None:
    """``/v1/publish``, ``/v1/publish/batch``, ``/v1/users/…`` and ``/v1/channels…``, each checking the API token
    itself (RequestGuard checks it first, but a router mounted without the middleware stays safe)."""

    @router.post("/v1/publish", response_model=PublishResponse, summary="Publish an event to one or more channels")
    async def publish(
        request: Request,
        response: Response,
        body: PublishRequest,
        x_socket_id: SocketIdHeader = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Any:
        try:
            check_api_token(settings, request)
            socket_id = x_socket_id if body.socket_id is None else body.socket_id
            result = await client.publish(
                body.targets, body.event, body.data, socket_id=socket_id, idempotency_key=idempotency_key
            )
        except RelayError as error:
            return error_response(_from_header(error, x_socket_id), request)
        return PublishResponse.of(result, response)

    @router.post("/v1/publish/batch", response_model=PublishResponse, summary="Publish several events")
    async def publish_batch(
        request: Request,
        response: Response,
        body: BatchRequest,
        x_socket_id: SocketIdHeader = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Any:
        try:
            check_api_token(settings, request)
            events = [
                Event(e.channel, e.event, e.data, x_socket_id if e.socket_id is None else e.socket_id)
                for e in body.events
            ]
            result = await client.publish_batch(events, idempotency_key=idempotency_key)
        except RelayError as error:
            return error_response(_from_header(error, x_socket_id), request)
        return PublishResponse.of(result, response)

    @router.post("/v1/users/{user_id}/events", response_model=UserResponse, summary="Send an event to one user")
    async def send_to_user(request: Request, user_id: str, body: UserEventRequest) -> Any:
        try:
            check_api_token(settings, request)
            await client.send_to_user(user_id, body.event, body.data)
        except RelayError as error:
            return error_response(error, request)
        return UserResponse(user_id=user_id)

    @router.post("/v1/users/{user_id}/terminate", response_model=UserResponse, summary="Close a user's connections")
    async def terminate_user(request: Request, user_id: str) -> Any:
        try:
            check_api_token(settings, request)
            await client.terminate_user_connections(user_id)
        except RelayError as error:
            return error_response(error, request)
        return UserResponse(user_id=user_id)

    @router.get(
        "/v1/channels",
        response_model=ChannelsResponse,
        summary="Occupied channels, by name prefix",
        openapi_extra=query_parameters(CHANNELS_QUERY),
    )
    async def channels(request: Request) -> Any:
        try:
            check_api_token(settings, request)
            found = await client.channels(own_query_fields(request, CHANNELS_QUERY).get("prefix", ""))
        except RelayError as error:
            return error_response(error, request)
        return ChannelsResponse(channels=[_channel_response(found[name]) for name in sorted(found)])

    @router.get("/v1/channels/{channel}", response_model=ChannelResponse, summary="One channel's state")
    async def channel(request: Request, channel: str) -> Any:
        try:
            check_api_token(settings, request)
            return _channel_response(await client.channel(channel))
        except RelayError as error:
            return error_response(error, request)

    @router.get("/v1/channels/{channel}/users", response_model=MembersResponse, summary="A presence channel's users")
    async def channel_users(request: Request, channel: str) -> Any:
        try:
            check_api_token(settings, request)
            members = await client.presence_members(channel)
        except RelayError as error:
            return error_response(error, request)
        return MembersResponse(users=[MemberResponse(id=member.user_id, info=member.info) for member in members])

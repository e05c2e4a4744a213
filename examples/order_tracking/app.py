"""The order-tracking backend: FastAPI, an in-memory order store, and relay for everything realtime.

Channels (the provider is whatever ``RELAY_URL`` names):

- ``private-kitchen``: ``order-placed`` when a customer orders, ``status-changed`` on every change (kitchen staff);
- ``presence-kitchen``: the kitchen staff on shift, with their names (kitchen staff);
- ``private-delivery``: ``status-changed`` for every order, so the delivery staff see pickups (delivery staff);
- ``private-order-{run}-{id}``: ``status-changed`` for that order (its customer, and the staff).

The browser pages authorize those channels at relay's ``/pusher/auth`` (or ``/ably/token``) through the channel rules
below, and read their connection settings from ``/api/config``. Sign-in is a demo: a name and a role in a signed
cookie; put your own session check in :meth:`Sessions.user`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StringConstraints

from relay import AsyncRelay, User
from relay.client import Configuration, configuration_from_env
from relay.config import url_host
from relay.errors import ConfigError, RelayError
from relay.gateway import BrowserSocket, frontend_config
from relay.rules import ChannelRules
from relay.web import auth_router

log = logging.getLogger("order_tracking")

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
ROOT = HERE.parent.parent
KITCHEN = "private-kitchen"
STAFF = "presence-kitchen"
DELIVERY = "private-delivery"
COOKIE = "order_session"
PUSHER_JS_CDN = "https://js.pusher.com/8.4.0/pusher.min.js"
ABLY_JS_CDN = "https://cdn.ably.com/lib/ably.min-2.js"

Role = Literal["customer", "kitchen", "delivery"]
Status = Literal["placed", "preparing", "ready", "picked_up", "delivered"]

MENU: dict[str, tuple[str, int]] = {
    "appam-stew": ("Appam with vegetable stew", 180),
    "parotta-curry": ("Kerala parotta and chicken curry", 240),
    "fish-moilee": ("Fish moilee with rice", 320),
    "karimeen": ("Karimeen pollichathu", 450),
    "payasam": ("Palada payasam", 120),
}

# Who may move an order into each status, and from which status.
TRANSITIONS: dict[Status, tuple[Role, Status]] = {
    "preparing": ("kitchen", "placed"),
    "ready": ("kitchen", "preparing"),
    "picked_up": ("delivery", "ready"),
    "delivered": ("delivery", "picked_up"),
}


@dataclass
class Order:
    id: int
    channel: str
    customer_id: str
    customer_name: str
    items: list[str]
    total: int
    status: Status = "placed"
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["items"] = [{"id": item, "name": MENU[item][0]} for item in self.items]
        return data


class OrderStore:
    """In memory, for the example; a real app keeps orders in its database."""

    def __init__(self) -> None:
        self._orders: dict[int, Order] = {}
        self._ids = itertools.count(1)
        # The numbers start at 1 again when the app restarts, while an emulator of its own (or Pusher) keeps the
        # pages' subscriptions: the channels carry this run's token, so a page still subscribed to the last run's #1
        # is not sent this run's #1, someone else's order.
        self._run = secrets.token_hex(4)

    def create(self, customer: User, items: list[str]) -> Order:
        order_id = next(self._ids)
        total = sum(MENU[item][1] for item in items)
        channel = f"private-order-{self._run}-{order_id}"
        order = Order(order_id, channel, customer.id, str(customer.info.get("name", "")), items, total)
        order.history.append({"status": "placed", "at": time.time(), "by": customer.info.get("name")})
        self._orders[order_id] = order
        return order

    def get(self, order_id: int) -> Order | None:
        return self._orders.get(order_id)

    def all(self) -> list[Order]:
        return list(self._orders.values())

    def owner_of(self, run_and_id: str) -> str | None:
        """The customer of the order whose channel ends in ``run_and_id`` (``{run}-{id}``)."""
        run, _, order_id = run_and_id.partition("-")
        order = self._orders.get(int(order_id)) if run == self._run and order_id.isdigit() else None
        return None if order is None else order.customer_id


class Sessions:
    """A demo sign-in: ``{id, role, name}`` in an HMAC-signed cookie."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def cookie_for(self, user: User) -> str:
        payload = base64.urlsafe_b64encode(json.dumps({"id": user.id, **user.info}).encode()).decode()
        return f"{payload}.{self._sign(payload.encode())}"

    def user(self, request: Request) -> User | None:
        """The signed-in user of a request, or None."""
        value = request.cookies.get(COOKIE, "")
        payload, _, signature = value.rpartition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload))
        except ValueError:
            return None
        user_id = data.pop("id")
        return User(user_id, data)

    def sign_in(self, response: Response, role: Role, name: str) -> User:
        return self._save(response, User(f"{role}-{secrets.token_hex(4)}", {"name": name, "role": role}))

    def rename(self, response: Response, user: User, name: str) -> User:
        """The same user (same id) under a new name."""
        return self._save(response, User(user.id, {**user.info, "name": name}))

    def _save(self, response: Response, user: User) -> User:
        response.set_cookie(COOKIE, self.cookie_for(user), httponly=True, samesite="lax")
        return user


def build_rules(orders: OrderStore) -> ChannelRules:
    """Who may subscribe to what; the first matching pattern decides, and anything unmatched is refused."""
    rules = ChannelRules()

    def role(user: User | None) -> str | None:
        return None if user is None else str(user.info.get("role"))

    @rules.channel(KITCHEN)
    def kitchen_orders(user: User | None) -> bool:
        return role(user) == "kitchen"

    @rules.channel(STAFF)
    def kitchen_staff(user: User | None) -> dict[str, str] | None:
        """Kitchen staff join the presence channel under their name."""
        if user is None or role(user) != "kitchen":
            return None
        return {"name": str(user.info["name"])}

    @rules.channel(DELIVERY)
    def delivery_board(user: User | None) -> bool:
        return role(user) == "delivery"

    @rules.channel("private-order-{run_and_id}")
    def order_updates(user: User | None, run_and_id: str) -> bool:
        if user is None:
            return False
        return role(user) in ("kitchen", "delivery") or orders.owner_of(run_and_id) == user.id

    return rules


# A name as typed, without the spaces around it: "   " is no name.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


class OrderRequest(BaseModel):
    name: Name
    items: list[str] = Field(min_length=1, max_length=20)


class SessionRequest(BaseModel):
    role: Literal["kitchen", "delivery"]
    name: Name


class StatusRequest(BaseModel):
    status: Status


@dataclass(frozen=True)
class BrowserLibrary:
    """A provider's browser build: served from a local copy when there is one, else loaded from its CDN."""

    package: str  # its npm name, as the pages and the start-up banner say it
    setting: str  # the environment variable naming a local copy
    npm_path: str
    npm_prefix: str  # where `npm ci --prefix …` installs it in this repository
    cdn: str

    def local_copy_advice(self) -> str:
        """How to give the app a local copy, as the pages say it."""
        return f"{self.setting}=/path/to/{Path(self.npm_path).name}, or npm ci --prefix {self.npm_prefix}"


BROWSER_LIBRARIES = {
    "pusher": BrowserLibrary(
        "pusher-js", "PUSHER_JS_PATH", "pusher-js/dist/web/pusher.min.js", "examples/nextjs", PUSHER_JS_CDN
    ),
    "ably": BrowserLibrary("ably-js", "ABLY_JS_PATH", "ably/build/ably.min.js", "tests/node", ABLY_JS_CDN),
}


def find_browser_library(name: str, configured: str | None = None) -> Path | None:
    """A library's browser build: ``configured`` (a path from the environment), else one from ``npm ci`` in
    examples/nextjs or tests/node, else None (the page loads it from the CDN). A ``configured`` path that is not a
    readable file is a ConfigError naming the setting: the user asked for that copy, and the CDN in its place is
    what they set it to avoid."""
    library = BROWSER_LIBRARIES[name]
    if configured:
        path = Path(configured)
        problem = (
            "does not exist" if not path.exists()
            else "is not a file" if not path.is_file()
            else "cannot be read" if not os.access(path, os.R_OK)
            else None
        )  # fmt: skip
        if problem is not None:
            raise ConfigError(
                f"{library.setting}={configured} {problem}: point it at a copy of {Path(library.npm_path).name} "
                f"({library.package}'s browser build), or unset it"
            )
        return path
    candidates = [
        ROOT / "examples/nextjs/node_modules" / library.npm_path,
        ROOT / "tests/node/node_modules" / library.npm_path,
    ]
    return next((path for path in candidates if path.is_file()), None)


def local_browser_builds() -> dict[str, Path | None]:
    """The local copy of each browser library (None: the pages load it from its CDN), from ``PUSHER_JS_PATH`` and
    ``ABLY_JS_PATH`` or an npm install; a setting that names no readable file is a ConfigError."""
    return {
        "pusher": find_browser_library("pusher", os.environ.get("PUSHER_JS_PATH")),
        "ably": find_browser_library("ably", os.environ.get("ABLY_JS_PATH")),
    }


def browser_library_of(client: AsyncRelay) -> str:
    """The browser library the pages use with ``client``'s provider: "ably" or "pusher"."""
    return "ably" if client.config.scheme == "ably" else "pusher"


def create_app(
    relay_url: Configuration | None = None, *, session_secret: bytes | None = None, emulator_on_page_host: bool = False
) -> FastAPI:
    """The app, publishing through ``relay_url`` (default: ``RELAY_URL`` or the ``PUSHER_*``/``ABLY_API_KEY``
    variables). Swapping providers changes nothing here or in the pages. ``emulator_on_page_host``: the emulator
    listens where the app does, and the pages connect to it at the host they were loaded from (the app's own
    ``relay_url`` names it at loopback, which is another machine's own address for a phone on the network)."""
    local_builds = local_browser_builds()  # first: a PUSHER_JS_PATH naming no file is a ConfigError
    client = AsyncRelay(relay_url if relay_url is not None else configuration_from_env(None))
    orders = OrderStore()
    sessions = Sessions(session_secret or os.environ.get("ORDER_TRACKING_SECRET", "").encode() or os.urandom(32))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="Order tracking (relay example)", lifespan=lifespan)
    app.state.orders = orders
    app.state.relay = client
    app.include_router(auth_router(client, build_rules(orders), sessions.user))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.local_builds = local_builds

    async def notify(channels: list[str], event: str, order: Order) -> bool:
        """Publish; a provider outage must not lose the order (the pages re-read the state when they reconnect)."""
        try:
            await client.publish(channels, event, order.to_json())
        except RelayError as error:
            log.warning("could not publish %s for order %s: %s", event, order.id, error)
            return False
        return True

    def require(request: Request, *roles: Role) -> User:
        user = sessions.user(request)
        if user is None:
            raise HTTPException(401, "sign in first")
        if roles and user.info.get("role") not in roles:
            raise HTTPException(403, f"only {' or '.join(roles)} staff may do this")
        return user

    for page, filename in (("/", "customer.html"), ("/kitchen", "kitchen.html"), ("/delivery", "delivery.html")):

        def serve(filename: str = filename) -> FileResponse:
            return FileResponse(STATIC / filename, headers={"cache-control": "no-store"})

        app.add_api_route(page, serve, methods=["GET"], include_in_schema=False)

    @app.get("/vendor/{name}.min.js", include_in_schema=False)
    def vendor_library(name: str) -> Response:
        if name not in local_builds:
            raise HTTPException(404, f"no browser library {name!r}")
        local = local_builds[name]
        if local is None:
            return RedirectResponse(BROWSER_LIBRARIES[name].cdn)
        return FileResponse(local, media_type="application/javascript")

    @app.get("/api/config")
    def config(request: Request) -> dict[str, Any]:
        """What the pages need to connect: the provider's client settings and relay's auth endpoints, and where their
        browser library comes from (``libraryCdn`` when there is no local copy, for the page to say if it fails)."""
        page_host = request.url.hostname
        # The emulator's own socket, at the name this page was loaded from (the gateway's RELAY_PUBLIC_WS_URL, per page)
        web_socket = (
            replace(BrowserSocket.of(client.config), host=url_host(page_host))
            if emulator_on_page_host and page_host
            else None
        )
        settings = frontend_config(
            client,
            channel_auth="/pusher/auth",
            user_auth="/pusher/user-auth",
            ably_auth="/ably/token",
            web_socket=web_socket,
        )
        name = browser_library_of(client)
        cdn = BROWSER_LIBRARIES[name].cdn if local_builds[name] is None else None
        return {**settings, "library": f"/vendor/{name}.min.js", "libraryCdn": cdn}

    @app.get("/api/menu")
    def menu() -> list[dict[str, Any]]:
        return [{"id": item, "name": name, "price": price} for item, (name, price) in MENU.items()]

    @app.get("/api/me")
    def me(request: Request) -> dict[str, Any] | None:
        user = sessions.user(request)
        return None if user is None else {"id": user.id, **user.info}

    @app.post("/api/session")
    def sign_in(body: SessionRequest, response: Response) -> dict[str, Any]:
        """Staff sign-in (a demo: no password)."""
        user = sessions.sign_in(response, body.role, body.name)
        return {"id": user.id, **user.info}

    @app.post("/api/orders", status_code=201)
    async def place_order(body: OrderRequest, request: Request, response: Response) -> dict[str, Any]:
        unknown = sorted(set(body.items) - set(MENU))
        if unknown:
            raise HTTPException(422, f"not on the menu: {', '.join(unknown)}")
        customer = sessions.user(request)
        if customer is None or customer.info.get("role") != "customer":
            customer = sessions.sign_in(response, "customer", body.name)
        elif customer.info.get("name") != body.name:
            # The name on the form is the one the order is for (a typo fixed, a meal for someone else): the order
            # and the cookie take it, under the same id, so the customer's earlier orders stay theirs.
            customer = sessions.rename(response, customer, body.name)
        order = orders.create(customer, body.items)
        live = await notify([KITCHEN], "order-placed", order)
        return {**order.to_json(), "live": live}

    @app.get("/api/orders")
    def list_orders(request: Request) -> list[dict[str, Any]]:
        """Staff see every order, a customer their own."""
        user = require(request)
        mine = [o for o in orders.all() if user.info.get("role") != "customer" or o.customer_id == user.id]
        return [order.to_json() for order in mine]

    @app.get("/api/orders/{order_id}")
    def get_order(order_id: int, request: Request) -> dict[str, Any]:
        user = require(request)
        order = orders.get(order_id)
        if order is None or (user.info.get("role") == "customer" and order.customer_id != user.id):
            raise HTTPException(404, "no such order")
        return order.to_json()

    @app.post("/api/orders/{order_id}/status")
    async def set_status(order_id: int, body: StatusRequest, request: Request) -> dict[str, Any]:
        require(request)  # first: whether an order exists is no answer for someone not signed in
        order = orders.get(order_id)
        if order is None:
            raise HTTPException(404, "no such order")
        if body.status not in TRANSITIONS:
            raise HTTPException(422, f"{body.status} is not a status staff can set")
        role, previous = TRANSITIONS[body.status]
        user = require(request, role)
        if order.status != previous:
            raise HTTPException(409, f"order {order_id} is {order.status}, not {previous}")
        order.status = body.status
        order.history.append({"status": body.status, "at": time.time(), "by": user.info.get("name")})
        live = await notify([order.channel, KITCHEN, DELIVERY], "status-changed", order)
        return {**order.to_json(), "live": live}

    return app

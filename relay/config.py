"""Provider configuration from one URL or the conventional environment variables.

    pusher://KEY:SECRET@api-eu.pusher.com/apps/APP_ID     hosted Pusher (or pusher://KEY:SECRET@eu/apps/ID: a cluster)
    emulator://KEY:SECRET@127.0.0.1:6001/apps/APP_ID      the Relay emulator (plain HTTP unless ?tls=true); a
                                                          server behind a proxy path: …:6001/PREFIX/apps/APP_ID
    ably://KEYNAME:KEYSECRET@rest.ably.io                 Ably (the host may be omitted; ?client_events=true lets
                                                          channel tokens publish, as Pusher's client events;
                                                          ?history=true lets them read the channel's history;
                                                          ?occupancy=true lets them have occupancy events)
    memory://NAME                                         in process, for tests: one store per NAME, as written

Secrets never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit, urlunsplit

from relay.errors import ConfigError, NoProviderConfigured
from relay.protocol.ably import split_api_key

SCHEMES = ("pusher", "emulator", "ably", "memory")
DEFAULT_ABLY_HOST = "rest.ably.io"


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    scheme: str
    key: str = ""
    secret: str = field(default="", repr=False)
    app_id: str = ""
    host: str = ""
    port: int | None = None
    tls: bool = True
    encryption_master_key: bytes | None = field(default=None, repr=False)
    # Ably only: channel tokens may publish (Pusher's client events, which a Pusher app enables in its settings)
    client_events: bool = False
    # Ably only: channel tokens may read the channel's history (history(), and untilAttach after a lost connection)
    history: bool = False
    # Ably only: channel tokens may have the channel's occupancy (channel-metadata: occupancy events, its status)
    occupancy: bool = False
    # pusher:// and emulator:// only: the path before /apps/APP_ID of a server that serves its API under a prefix
    # (the emulator's path_prefix): empty, or "/" and segments as written in the URL (escapes kept: a server compares
    # the prefix with the raw request path), without a trailing "/"
    path_prefix: str = ""

    def __post_init__(self) -> None:
        if self.scheme in ("pusher", "emulator"):
            _check_app_id(self.app_id)
        if self.scheme == "ably" and not self.tls and is_hosted_ably(self.host):
            # The library sends the key with HTTP Basic auth, its secret readable by anyone on the way; Ably answers
            # 40103 "Cannot use Basic Auth over non-TLS connections", after the secret has crossed the network.
            raise ConfigError(
                f"ably:// URL with tls=false names Ably's cloud ({self.host}), which takes a key only over TLS "
                "(Ably error 40103) and would have its secret sent in clear: leave out tls=false"
            )

    @property
    def url_host(self) -> str:
        return url_host(self.host)

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls else "http"
        default_port = 443 if self.tls else 80
        port = "" if self.port in (None, default_port) else f":{self.port}"
        return f"{scheme}://{self.url_host}{port}"

    def url(self, *, privacy: bool = True) -> str:
        """The configuration as a URL; with ``privacy`` the secret is replaced by ``***`` and the encryption master
        key left out, without it the whole configuration, which parses back to itself."""
        master_key = ""
        if self.encryption_master_key is not None and not privacy:
            master_key = f"encryption_master_key={quote(base64.b64encode(self.encryption_master_key), safe='')}"
        if self.scheme == "memory":
            return f"memory://{self.host}{'?' if master_key else ''}{master_key}"
        secret = "***" if privacy else quote(self.secret, safe="")
        port = f":{self.port}" if self.port is not None else ""
        path = f"{self.path_prefix}/apps/{quote(self.app_id, safe='')}" if self.scheme in ("pusher", "emulator") else ""
        query = "" if self.tls or self.scheme == "emulator" else "?tls=false"  # emulator:// is plain by default
        if self.scheme == "emulator" and self.tls:
            query = "?tls=true"
        if self.client_events:
            query += f"{'&' if query else '?'}client_events=true"
        if self.history:
            query += f"{'&' if query else '?'}history=true"
        if self.occupancy:
            query += f"{'&' if query else '?'}occupancy=true"
        if master_key:
            query += f"{'&' if query else '?'}{master_key}"
        return f"{self.scheme}://{quote(self.key, safe='.')}:{secret}@{self.url_host}{port}{path}{query}"

    def __repr__(self) -> str:
        return f"ProviderConfig({self.url()!r})"


# What the emulator refuses in an app id (emulator/config.py): a request's path is /apps/APP_ID/…, so an app id with
# '/' would send it to another path (PUSHER_APP_ID=1/2 → /apps/1/2/events), and '?', '#', '%' or whitespace would be
# read as something else by the server
_APP_ID_UNSAFE = re.compile(r"[/?#%\s]")


def _check_app_id(app_id: str) -> None:
    if not app_id or _APP_ID_UNSAFE.search(app_id) or not app_id.isprintable():
        raise ConfigError(
            f"app id {app_id!r} cannot be used: it goes in the request path /apps/APP_ID/…, so it is a non-empty "
            "id without '/', '?', '#', '%' or whitespace (hosted Pusher's are numbers: dashboard → App Keys)"
        )


LEGACY_PUSHER_HOST = "api.pusherapp.com"  # hosted Pusher's legacy API host, the mt1 cluster's (pusher-http-node's)


def is_hosted_pusher(host: str) -> bool:
    """Whether ``host`` is hosted Pusher's API (``api-CLUSTER.pusher.com`` or the legacy host), however written: DNS
    names ignore case, and a trailing dot names the same host."""
    name = _dns_name(host)
    return name.endswith(".pusher.com") or name == LEGACY_PUSHER_HOST


def is_hosted_ably(host: str) -> bool:
    """Whether ``host`` is Ably's cloud (``rest.ably.io``, ``main.realtime.ably.net`` and the like), however written."""
    name = _dns_name(host)
    return name == "ably.io" or name.endswith((".ably.io", ".ably.net"))


def hosted_pusher_cluster(host: str) -> str:
    """The cluster of hosted Pusher's API host ``api-CLUSTER.pusher.com``; the legacy host's is ``mt1``."""
    name = _dns_name(host)
    if name.startswith("api-") and name.endswith(".pusher.com"):
        return name[len("api-") : -len(".pusher.com")]
    return "mt1"


def _dns_name(host: str) -> str:
    return host.lower().rstrip(".")


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


_ORIGIN = re.compile(r"https?://[^/\s*]+")
_WHITESPACE = re.compile(r"\s")


def is_url(url: object, schemes: Collection[str], *, host: bool = True) -> bool:
    """A URL with one of ``schemes``; with ``host``, a host too (and, if it has one, a port other than 0)."""
    return url_problem(url, schemes, host=host) is None


def url_problem(url: object, schemes: Collection[str], *, host: bool = True) -> str | None:
    """Why ``url`` is not what :func:`is_url` takes, or None. Whitespace anywhere, or a control character, makes it no
    URL: urlsplit strips them from the ends and reads on, where httpx reads a URL with an empty scheme (a leading
    space) or sends a path ending in %20 (a trailing one)."""
    if not isinstance(url, str):
        return f"it is {type(url).__name__}, not text"
    if not url.isprintable() or _WHITESPACE.search(url):
        return "it has a space or a control character in it (a space in a path is written %20)"
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracketed host that is not an IPv6 address
        return "its host in [] is not an IPv6 address"
    if parts.scheme not in schemes:
        return f"its scheme is not {' or '.join(sorted(schemes))}"
    if not host:
        return None
    if not parts.hostname:
        return "it has no host"
    try:
        port = parts.port
    except ValueError:  # a port that is not a number, or past 65535
        port = 0
    return "its port is not a number from 1 to 65535" if port == 0 else None


def is_http_url(url: object) -> bool:
    """An ``http://`` or ``https://`` URL with a host (and, if it has one, a port other than 0)."""
    return is_url(url, ("http", "https"))


def is_origin(text: object) -> bool:
    """A browser's ``Origin``: scheme, host and maybe a port; no path, no wildcard."""
    return isinstance(text, str) and _ORIGIN.fullmatch(text) is not None and is_http_url(text)


def provider_url_text(url: object) -> str:
    """``url`` without the whitespace around it, if it is a str a provider URL can be read from; anything else is a
    ConfigError naming the fix. A value from a .env file or a secret file may end with a space or a newline, which
    is no part of a URL: kept, a space would end up in the app id (``/apps/1 ``), refused as a wrong one."""
    if url is None:  # what os.getenv("RELAY_URL") returns when the variable is not set
        raise ConfigError("no provider URL given (None): set RELAY_URL or pass a URL")
    if isinstance(url, bytes | bytearray):
        raise ConfigError("a provider URL is a str, not bytes: decode it (url.decode())")
    if not isinstance(url, str):
        schemes = ", ".join(SCHEMES)
        raise ConfigError(
            f"a provider URL is a str (scheme://…, with scheme one of {schemes}), not {type(url).__name__}"
        )
    refuse_undecoded(url, "the provider URL")
    return url.strip()


def undecoded(text: str) -> str | None:
    """What is wrong with ``text`` when it holds a lone surrogate, else None: os.environ and sys.argv keep so each byte
    that is not UTF-8, and nothing holding one can be sent to a provider (or signed with)."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return f"is not UTF-8 text: its character {exc.start + 1} is a byte that could not be decoded"
    return None


def refuse_undecoded(text: str, what: str) -> None:
    problem = undecoded(text)
    if problem is not None:
        raise ConfigError(f"{what} {problem} (the environment keeps such bytes as they were); set it again")


def parse_url(url: str) -> ProviderConfig:
    """Parse a provider URL; a mistake raises :class:`ConfigError` naming the fix (and never the secret)."""
    url = provider_url_text(url)
    try:
        return _parse_url(url)
    except ConfigError:
        if _SEVERAL_URLS.search(url):  # memory://a|memory://b: "has a port" would name the wrong mistake
            raise ConfigError(
                "several provider URLs joined by '|' need mirror: (every publish to each) or failover: (each "
                "operation to the first that works) before them: mirror:URL|URL"
            ) from None
        raise


# A '|' followed by what begins a provider URL
_SEVERAL_URLS = re.compile(r"\|\s*[A-Za-z][A-Za-z0-9+.-]*://")


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# What a value may hold before the URL: RELAY_URL=emulator://… (the assignment pasted whole), the banner's line
_NAMED_URL = re.compile(r"(.*?)[=:\s]+([A-Za-z]+)")
_VARIABLE = re.compile(r"(export\s+)?[A-Za-z_][A-Za-z0-9_]*")


def _unknown_scheme(written: str) -> str:
    """Why ``written``, what comes before a provider URL's ``://``, is not one of SCHEMES, with what to write instead.
    Only a scheme is shown (it holds no credentials); a URL in quotes or after its variable's name had "unknown
    provider scheme ''", and one in http://, the address the emulator prints, no pointer to emulator://."""
    schemes = ", ".join(SCHEMES)
    if written[:1] in ("'", '"'):
        return f"the URL is {_in_quotes(written[0])}"
    named = _NAMED_URL.fullmatch(written)
    if named and named[2].lower() in SCHEMES and _VARIABLE.fullmatch(named[1]):
        return f"the value begins with {named[1]!r} before the URL: give the URL alone, {named[2].lower()}://…"
    if not _SCHEME.fullmatch(written):
        return f"a provider URL looks like scheme://…, with scheme one of {schemes}"
    scheme = written.lower()
    refused = f"unknown provider scheme {scheme!r}; use one of {schemes}"
    if scheme in ("http", "https"):
        return (
            f"{refused}: the emulator (or soketi, Reverb) at {scheme}://HOST:PORT is "
            f"emulator://KEY:SECRET@HOST:PORT/apps/APP_ID{'?tls=true' if scheme == 'https' else ''}, and "
            f"{scheme}://KEY:SECRET@HOST/apps/APP_ID is PUSHER_URL's form"
        )
    if scheme in ("ws", "wss"):
        return (
            f"{refused}: {scheme}:// is where browsers connect; publishing goes to the server's HTTP API, "
            f"emulator://KEY:SECRET@HOST:PORT/apps/APP_ID{'?tls=true' if scheme == 'wss' else ''}"
        )
    close = difflib.get_close_matches(scheme, SCHEMES, n=1, cutoff=0.75)
    return f"{refused} (did you mean {close[0]}?)" if close else refused


def _parse_url(url: str) -> ProviderConfig:
    if "://" not in url:
        raise ConfigError(f"a provider URL looks like scheme://…, with scheme one of {', '.join(SCHEMES)}")
    written = url.partition("://")[0]
    if written.lower() not in SCHEMES:  # checked before the URL is split: a quoted URL's scheme was ''
        raise ConfigError(_unknown_scheme(written))
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return _memory_config(parts)
    if parts.fragment or url.endswith("#"):
        raise ConfigError(
            f"{scheme}:// URL has a fragment (#…), which no provider reads: drop it ({_percent_encoding_hint('#')})"
        )
    if scheme == "ably" and parts.path not in (("", "/") if "@" in parts.netloc else ("",)):
        # An Ably URL has no path: what urlsplit took for one began at a '/' in the secret (never echoed here), and
        # without a host even a trailing '/' is the secret's last character
        raise ConfigError(f"ably:// URL has a path after the host: {_percent_encoding_hint('/')}")
    if scheme == "ably" and parts.netloc and "@" not in parts.netloc:
        parts = parts._replace(netloc=f"{parts.netloc}@")  # ably://APPID.KEYID:SECRET, the host omitted
    if scheme != "ably":
        _refuse_cut_credentials(scheme, url.partition("://")[2])
    key = _decoded(parts.username or "", f"the {scheme}:// URL's key")
    secret = _decoded(parts.password or "", f"the {scheme}:// URL's secret", secret=True)
    if not key or not secret:
        hint = "KEYNAME:KEYSECRET" if scheme == "ably" else "KEY:SECRET"
        raise ConfigError(f"{scheme}:// URL needs credentials: {scheme}://{hint}@host…")
    options = _options(scheme, parts.query)
    port_text = _port_text(parts.netloc)
    if not port_text and parts.netloc.endswith(":"):  # urlsplit reads eu: as no port
        raise ConfigError(f"{scheme}:// URL has a ':' after its host and no port: give the port, or drop the ':'")
    port = _port_number(port_text) if port_text else None
    if port_text and port is None:
        if ":" in port_text:  # pusher://KEY:SECRET@::1/… read as the host '' and the port ':1'
            raise ConfigError(f"{scheme}:// URL's host looks like an IPv6 address: write it in brackets, [::1]:6001")
        raise ConfigError(f"{scheme}:// URL has an invalid port {port_text!r}: a port is a number from 1 to 65535")
    tls = _flag(options.pop("tls", "false" if scheme == "emulator" else "true"), "tls")
    _refuse_misplaced_options(scheme, options)
    master_key = _master_key(options.pop("encryption_master_key", None))
    client_events = _flag(options.pop("client_events", "false"), "client_events")
    history = _flag(options.pop("history", "false"), "history")
    occupancy = _flag(options.pop("occupancy", "false"), "occupancy")
    _refuse_unknown_options(scheme, options, _ABLY_OPTIONS if scheme == "ably" else "tls, encryption_master_key")
    host = parts.hostname or ""
    if host and ":" not in host and "[" in parts.netloc.rpartition("@")[2]:  # urlsplit drops the brackets of [v1.x]
        raise ConfigError(f"{scheme}:// URL's host [{host}] is in brackets, which hold an IPv6 address only")
    if host and not _is_host(host):
        raise ConfigError(f"{scheme}:// URL's host {host!r} is not a host name or an IP address{_ipv4_hint(host)}")
    if scheme == "ably":
        try:
            # the key was percent-decoded: a ':' in it (%3A) would end the key name when the key is sent to Ably
            well_formed = split_api_key(f"{key}:{secret}") == (key, secret)
        except ConfigError:
            well_formed = False
        if not well_formed:
            raise ConfigError("ably:// URL needs the full key name APPID.KEYID before the colon (Ably → API Keys)")
        return ProviderConfig(
            "ably",
            key,
            secret,
            key.partition(".")[0],
            host or DEFAULT_ABLY_HOST,
            port,
            tls,
            client_events=client_events,
            history=history,
            occupancy=occupancy,
        )
    path_prefix, app_id = _app_path(parts.path, scheme)
    if not host:
        raise ConfigError(f"{scheme}:// URL needs a host, for example {scheme}://KEY:SECRET@127.0.0.1:6001/apps/1")
    if scheme == "pusher" and port is None and "." not in host and ":" not in host and host != "localhost":
        if not _CLUSTER.fullmatch(host):  # api--bad-.pusher.com would fail only at the first request
            raise ConfigError(
                f"pusher:// URL's host {host!r} is taken for a cluster's short name, such as eu, mt1, us2 or ap3 "
                "(a name without a dot), and is not one"
            )
        host = f"api-{host}.pusher.com"  # a bare cluster name such as "eu" or "mt1" (a host with a port is a host)
    if path_prefix and is_hosted_pusher(host):
        raise ConfigError(f"{scheme}:// URL of hosted Pusher ({host}) takes no path prefix: its API is /apps/APP_ID")
    return ProviderConfig(scheme, key, secret, app_id, host, port, tls, master_key, path_prefix=path_prefix)


def _memory_config(parts: SplitResult) -> ProviderConfig:
    """``memory://NAME``: the name exactly as written names the store (it is no host name: ``Tests`` is not
    ``tests``). Anything else the URL has would be dropped, and two URLs that differ by it share one store."""
    where_not_allowed = [
        ("has credentials (user@)", "@" in parts.netloc),
        ("has a port (':' after the name)", ":" in parts.netloc),
        ("has a path (after the name)", parts.path not in ("", "/")),  # memory://NAME/ is memory://NAME
        ("has a fragment (#…)", bool(parts.fragment)),
    ]
    problem = next((problem for problem, found in where_not_allowed if found), None)
    if problem is not None:
        raise ConfigError(
            f"memory:// URL {problem}: a memory URL is memory://NAME (NAME as written, case-sensitive), with "
            "?encryption_master_key=… if needed"
        )
    options = _options("memory", parts.query)
    master_key = _master_key(options.pop("encryption_master_key", None))
    _refuse_unknown_options("memory", options, "encryption_master_key")
    return ProviderConfig(scheme="memory", host=parts.netloc, encryption_master_key=master_key)


def _percent_encoding_hint(character: str) -> str:
    return f"a secret containing {character} is percent-encoded ({quote(character, safe='')})"


def _refuse_cut_credentials(scheme: str, after_scheme: str) -> None:
    """A '/', '?' or '#' in the key or secret ends the URL's host part early: its '@' comes after it. urlsplit then
    finds no credentials (the URL would be said to need some), or, with an '@' in the secret before it, takes the
    secret's start for the host ("k:p@ss/w:rd@host" would be sent to "ss")."""
    cut = re.search(r"[/?#]", after_scheme)
    if cut is not None and "@" in after_scheme[cut.start() :]:
        raise ConfigError(f"{scheme}:// URL's credentials end at a {cut[0]!r}: {_percent_encoding_hint(cut[0])}")


_CLUSTER = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def _cluster(cluster: str) -> str:
    """``PUSHER_CLUSTER``, a cluster's short name (the host is made of it): a host or URL there would make one such
    as api-https://eu.pusher.com, which fails only at the first request, as a network error."""
    name = cluster.lower()  # host names are case-insensitive: EU is eu
    if not _CLUSTER.fullmatch(name):
        raise ConfigError(
            f"PUSHER_CLUSTER must be a cluster's short name such as eu, mt1, us2 or ap3, got {cluster!r} "
            "(a server's host goes in PUSHER_HOST, with PUSHER_PORT and PUSHER_SCHEME)"
        )
    return name


_OPTION_NAMES = frozenset({"tls", "encryption_master_key", "client_events", "history", "occupancy"})


def _options(scheme: str, query: str) -> dict[str, str]:
    """A URL's options, each given once. An empty value (``?tls=``, a template's unset variable) leaves the option at
    its default; a name without ``=`` is refused, since ``?client_events`` alone reads as on and would be left off,
    and an unknown name is kept for the caller to refuse, blank or not."""
    bare = next((part for part in query.split("&") if part and "=" not in part), None)
    if bare is not None:
        name = unquote(bare)
        raise ConfigError(f"{scheme}:// URL has the option {name} without a value: write {name}=VALUE")
    options: dict[str, str] = {}
    for name, value in parse_qsl(query.replace("+", "%2B"), keep_blank_values=True):  # a literal '+', as in base64
        if name in options:
            raise ConfigError(f"{scheme}:// URL gives the option {name} twice: give it once")
        if value or name not in _OPTION_NAMES:
            options[name] = value
    return options


def _refuse_unknown_options(scheme: str, options: Mapping[str, str], known: str) -> None:
    """A misspelt option would be dropped, and the error it leads to would name the option the URL seems to have."""
    if options:
        unknown = ", ".join(sorted(name or "'' (an empty name)" for name in options))
        raise ConfigError(f"{scheme}:// URL has unknown option(s) {unknown}; the options are {known}")


_ABLY_OPTIONS = "tls, client_events, history, occupancy"
_PUSHER_SCHEMES = ("pusher", "emulator")
_CLIENT_EVENTS_SETTING = {
    "pusher": "the Pusher app's setting (dashboard → App Settings → Enable client events)",
    "emulator": "the emulator app's setting: client_events = true|false in its [[apps]] entry of the config file",
}


def _refuse_misplaced_options(scheme: str, options: Mapping[str, str]) -> None:
    """Options that belong to another scheme: a ConfigError saying where that setting lives."""
    if "client_events" in options and scheme in _CLIENT_EVENTS_SETTING:
        raise ConfigError(
            f"{scheme}:// URL cannot set client_events: whether clients may send client-* events is "
            f"{_CLIENT_EVENTS_SETTING[scheme]}"
        )
    if "history" in options and scheme in _PUSHER_SCHEMES:
        raise ConfigError(
            f"{scheme}:// URL cannot set history: Pusher channels keep no history (the option is for ably:// URLs)"
        )
    if "occupancy" in options and scheme in _PUSHER_SCHEMES:
        raise ConfigError(
            f"{scheme}:// URL cannot set occupancy: Pusher's subscription counts are the app's subscription_count "
            "setting (the option is for ably:// URLs)"
        )
    if "encryption_master_key" in options and scheme == "ably":
        raise ConfigError(
            "ably:// URL cannot take encryption_master_key: Ably has no end-to-end encrypted channels here "
            f"(the key is for pusher://, emulator:// and memory:// URLs); the options are {_ABLY_OPTIONS}"
        )


_PATH_SEGMENT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+")  # RFC 3986 pchar


def _app_path(path: str, scheme: str) -> tuple[str, str]:
    """(the path prefix, the app id) of a URL's path ``[/PREFIX…]/apps/APP_ID``. The app id is percent-decoded (it is
    encoded again when a request is sent); the prefix is kept as written, since a server compares it with the raw
    request path, and is sent and signed so."""
    segments = [segment for segment in path.split("/") if segment]
    if len(segments) < 2 or segments[-2] != "apps":
        raise ConfigError(f"{scheme}:// URL must end with /apps/APP_ID (after a path prefix, if the server has one)")
    for segment in segments[:-2]:
        if segment in (".", ".."):  # a browser or a proxy would resolve it away
            raise ConfigError(f"{scheme}:// URL's path prefix cannot have a {segment!r} segment")
        if not _PATH_SEGMENT.fullmatch(segment):
            raise ConfigError(
                f"{scheme}:// URL's path prefix has {segment[:50]!r}: a segment is letters, digits, "
                "-._~!$&'()*+,;=:@ and %XX escapes"
            )
    prefix = "".join(f"/{segment}" for segment in segments[:-2])
    return prefix, _decoded(segments[-1], f"the {scheme}:// URL's app id")


def _split(url: str) -> SplitResult:
    scheme = url.partition("://")[0].lower()
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracket left open or closed, or brackets around something that is not IPv6
        credentials, _, host_and_port = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0].rpartition("@")
        if "[" in credentials or "]" in credentials:  # urlsplit looks for brackets in the whole netloc
            raise ConfigError(f"{scheme}:// URL's key or secret has '[' or ']': percent-encode it (%5B, %5D)") from None
        raise ConfigError(
            f"{scheme}:// URL's host {host_and_port!r} is not a host name or an IP address (IPv6 is written [::1])"
        ) from None
    host_and_port = parts.netloc.rpartition("@")[2]
    _, bracket, after_ipv6 = host_and_port.rpartition("]")
    if bracket and after_ipv6 and not after_ipv6.startswith(":"):  # urlsplit drops what follows the ']'
        raise ConfigError(
            f"{scheme}:// URL's host {host_and_port!r} is not a host name or an IP address (IPv6 is written [::1], "
            "with a port [::1]:6001)"
        )
    return parts


def _port_text(netloc: str) -> str:
    """What follows the host in ``netloc`` after a ':', as written (urlsplit's ``port`` hides it or accepts 0)."""
    host_and_port = netloc.rpartition("@")[2]
    _, bracket, after_ipv6 = host_and_port.rpartition("]")
    return (after_ipv6 if bracket else host_and_port).partition(":")[2]


def _port_number(text: str) -> int | None:
    """``text`` as a port that can be connected to, or None (int() also takes non-ASCII digits such as '٣')."""
    if text.isascii() and text.isdigit() and 0 < int(text) <= 65535:
        return int(text)
    return None


def _is_host(host: str) -> bool:
    """A host name or an IP address alone: no scheme, port, path, brackets or spaces, and no empty label or one over
    63 characters, which the resolver refuses with a UnicodeError (not an OSError) from inside the first request."""
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    if not host or not all(char.isalnum() or char in "-._" for char in host):
        return False
    if _looks_ipv4(host):
        try:  # httpx takes four numbers for an IPv4 address, and refuses 999.1.1.1 or 01.2.3.4 at the first request
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    try:
        host.encode("idna")  # as socket.getaddrinfo encodes it
    except UnicodeError:
        return False
    return True


def _looks_ipv4(host: str) -> bool:
    labels = host.split(".")
    return len(labels) == 4 and all(label.isascii() and label.isdigit() for label in labels)


def _ipv4_hint(host: str) -> str:
    """What a refused host of four numbers is told, else nothing."""
    return " (an IPv4 address is four numbers from 0 to 255, without leading zeros)" if _looks_ipv4(host) else ""


def _decoded(text: str, what: str, *, secret: bool = False) -> str:
    """``text`` percent-decoded; an escape that is not UTF-8 is an error naming it (unless it is in a secret),
    where unquote() would have put '\ufffd' in its place."""
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError as error:
        if secret:
            raise ConfigError(f"{what} has a percent-escape that is not UTF-8") from None
        escape = "".join(f"%{byte:02X}" for byte in error.object[error.start : error.end])
        raise ConfigError(f"{what} has {escape}, a percent-escape that is not UTF-8") from None


def _flag(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _master_key(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("encryption_master_key must be base64 (32 random bytes: `openssl rand -base64 32`)") from None
    if len(key) != 32:
        raise ConfigError(f"encryption_master_key must decode to 32 bytes, got {len(key)}")
    return key


def pusher_url(url: str) -> ProviderConfig:
    """``PUSHER_URL``, as the Pusher server SDKs' ``from_env`` read it and Heroku's Pusher add-on sets it:
    ``https://KEY:SECRET@api-CLUSTER.pusher.com/apps/APP_ID`` (``http://`` for a server without TLS)."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        raise ConfigError("PUSHER_URL looks like https://KEY:SECRET@api-CLUSTER.pusher.com/apps/APP_ID")
    https = scheme.lower() == "https"
    try:
        parts = _split(f"pusher://{rest}")
        if any(name == "tls" and value for name, value in parse_qsl(parts.query, keep_blank_values=True)):
            # https://…?tls=false would publish in clear; http://…?tls=true read as the option given twice
            raise ConfigError("no tls option: the scheme says whether TLS is used (https:// or http://)")
        host = parts.hostname or ""
        if host and not _port_text(parts.netloc) and "." not in host and ":" not in host and host != "localhost":
            # The SDKs read the host as a host: a service name such as "soketi" is no cluster name here
            parts = parts._replace(netloc=f"{parts.netloc}:{443 if https else 80}")
        if not https:
            parts = parts._replace(query="&".join(query for query in (parts.query, "tls=false") if query))
        return parse_url(urlunsplit(parts))
    except ConfigError as exc:
        raise ConfigError(f"PUSHER_URL ({scheme}://KEY:SECRET@HOST/apps/APP_ID): {exc.message}") from None


# Read with PUSHER_APP_ID, PUSHER_KEY and PUSHER_SECRET: set without them, they still say a Pusher app was meant.
_PUSHER_SETTINGS = (
    "PUSHER_CLUSTER",
    "PUSHER_HOST",
    "PUSHER_PORT",
    "PUSHER_SCHEME",
    "PUSHER_ENCRYPTION_MASTER_KEY_BASE64",
)


_READ_BY_FROM_ENV = (
    "RELAY_URL", "PUSHER_URL", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET", *_PUSHER_SETTINGS, "ABLY_API_KEY",
)  # fmt: skip


def trimmed_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment's values without the whitespace around them, and without those of whitespace only. A value
    from a .env file or a secret file may end with a space or a newline, which is no part of an id, a key or a secret:
    kept, a secret "s\n" would sign every request wrongly and fail only at the first, as a 401. docker-compose passes
    unset variables as empty strings: empty is unset."""
    values = os.environ if environ is None else environ
    if not isinstance(values, Mapping):  # from_env("pusher://…") for from_url: an AttributeError deep inside
        raise ConfigError(
            f"the environment is a mapping of variable names to values, not {type(values).__name__}: "
            "for a provider URL, use from_url"
        )
    refused = next((name for name, value in values.items() if not isinstance(value, str)), None)
    if refused is not None:
        raise ConfigError(f"{refused} is {type(values[refused]).__name__}, not str: an environment holds text")
    return {name: value.strip() for name, value in values.items() if value.strip()}


def refuse_quoted(value: str, name: str) -> None:
    """ConfigError for a provider variable whose value is in quotes, which docker's --env-file and some .env readers
    keep: PUSHER_KEY="app-key" was sent as the key '"app-key"', a 401 "auth_key is not this application's key", and a
    quoted secret signed every request wrongly. No key, secret, app id, URL or cluster begins and ends with a quote.
    RELAY_URL's own parse says it (for Relay.from_url too)."""
    if name != "RELAY_URL" and len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
        raise ConfigError(f"{name} is {_in_quotes(value[0])}")


def _in_quotes(quote_mark: str) -> str:
    return (
        f"written in quotes ({quote_mark}…{quote_mark}), which are part of the value here (docker's --env-file and "
        "some .env readers keep them): remove them"
    )


def from_env(environ: Mapping[str, str] | None = None) -> ProviderConfig:
    """``RELAY_URL``, else ``PUSHER_URL``, else the ``PUSHER_*`` variables, else ``ABLY_API_KEY``; with
    ``PUSHER_ENCRYPTION_MASTER_KEY_BASE64``, whichever configures a Pusher-protocol or memory provider."""
    env = trimmed_environment(environ)
    for name in _READ_BY_FROM_ENV:
        if name in env:
            refuse_undecoded(env[name], name)
            refuse_quoted(env[name], name)
    master_key = env_master_key(env)
    if env.get("RELAY_URL"):
        try:
            config = parse_url(env["RELAY_URL"])
        except ConfigError as exc:  # which setting is wrong, for a service started with many (PUSHER_URL's say)
            raise ConfigError(f"RELAY_URL: {exc.message}") from None
        return with_master_key(config, master_key)
    if env.get("PUSHER_URL"):
        return with_master_key(pusher_url(env["PUSHER_URL"]), master_key)
    pusher_names = ("PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET")
    if any(env.get(name) for name in pusher_names):
        missing = [name for name in pusher_names if not env.get(name)]
        if missing:
            # Laravel's .env names the key and the secret PUSHER_APP_KEY and PUSHER_APP_SECRET
            laravel = [f"PUSHER_APP_{name[7:]}" for name in missing if env.get(f"PUSHER_APP_{name[7:]}")]
            hint = (
                f"Relay reads {' and '.join(missing)}, which Laravel's .env names {' and '.join(laravel)}: set the "
                "values under Relay's names too"
                if laravel
                else "or RELAY_URL instead of the PUSHER_* variables"
            )
            raise ConfigError(f"set {', '.join(missing)} too ({hint})")
        # docker-compose passes unset variables as empty strings: empty is unset, here as for PUSHER_HOST
        scheme = (env.get("PUSHER_SCHEME") or "https").lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"PUSHER_SCHEME must be http or https, got {scheme!r}")
        if env.get("PUSHER_HOST") and not _is_host(env["PUSHER_HOST"]):
            raise ConfigError(
                f"PUSHER_HOST must be a host name or an IP address, got {env['PUSHER_HOST']!r}"
                + (_ipv4_hint(env["PUSHER_HOST"]) or " (the scheme goes in PUSHER_SCHEME, the port in PUSHER_PORT)")
            )
        host = env.get("PUSHER_HOST") or f"api-{_cluster(env.get('PUSHER_CLUSTER') or 'mt1')}.pusher.com"
        port_text = env.get("PUSHER_PORT") or ""
        port = _port_number(port_text) if port_text else None
        if port_text and port is None:
            raise ConfigError(f"PUSHER_PORT must be a number from 1 to 65535, got {port_text!r}")
        try:
            return ProviderConfig(
                "pusher",
                env["PUSHER_KEY"],
                env["PUSHER_SECRET"],
                env["PUSHER_APP_ID"],
                host,
                port,
                scheme == "https",
                master_key,
            )
        except ConfigError as exc:
            raise ConfigError(f"PUSHER_APP_ID: {exc.message}") from None
    if env.get("ABLY_API_KEY"):
        try:
            key_name, secret = split_api_key(env["ABLY_API_KEY"])
        except ConfigError:
            raise ConfigError("ABLY_API_KEY looks like APPID.KEYID:SECRET (Ably dashboard → API Keys)") from None
        return ProviderConfig("ably", key_name, secret, key_name.partition(".")[0], DEFAULT_ABLY_HOST)
    pusher_settings = [name for name in _PUSHER_SETTINGS if env.get(name)]
    if pusher_settings:
        raise ConfigError(f"{', '.join(pusher_settings)} set: set PUSHER_APP_ID, PUSHER_KEY and PUSHER_SECRET too")
    raise NoProviderConfigured(
        "no provider configured: set RELAY_URL (e.g. emulator://app-key:app-secret@127.0.0.1:6001/apps/1), "
        "or PUSHER_URL, or PUSHER_APP_ID, PUSHER_KEY and PUSHER_SECRET, or ABLY_API_KEY" + _misspelt_hint(env)
    )


# What a variable of the environment may have been meant to be, when none is set: RELAY_URI, relay_url, ABLY_KEY
_PROVIDER_VARIABLES = ("RELAY_URL", "PUSHER_URL", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET", "ABLY_API_KEY")


def _misspelt_hint(env: Mapping[str, str]) -> str:
    """`` (RELAY_URI is set: did you mean RELAY_URL?)`` for the variables of ``env`` whose names are close to one
    that configures a provider: a typo, or the right name in the wrong case, was otherwise only "no provider"."""
    meant = []
    for name in sorted(env):
        if name in _READ_BY_FROM_ENV:
            continue
        close = difflib.get_close_matches(name.upper(), _PROVIDER_VARIABLES, n=1, cutoff=0.8)
        if close:
            meant.append(f"{name} is set: did you mean {close[0]}?")
    return f" ({'; '.join(meant[:3])})" if meant else ""


def env_master_key(environ: Mapping[str, str]) -> bytes | None:
    """``PUSHER_ENCRYPTION_MASTER_KEY_BASE64`` of ``environ``, decoded (None when unset or empty); ConfigError naming
    the variable for one that is not 32 bytes of base64."""
    try:
        return _master_key(environ.get("PUSHER_ENCRYPTION_MASTER_KEY_BASE64", "").strip() or None)
    except ConfigError as exc:
        raise ConfigError(f"PUSHER_ENCRYPTION_MASTER_KEY_BASE64: {exc.message}") from None


def with_master_key(config: ProviderConfig, master_key: bytes | None) -> ProviderConfig:
    """``config`` with ``master_key`` (``PUSHER_ENCRYPTION_MASTER_KEY_BASE64``), if it configures a provider with
    encrypted channels (Pusher's protocol, memory; Ably has none). The variable is set beside a URL (Heroku's Pusher
    add-on sets PUSHER_URL, with no place for the key): a URL with a key of its own must have that one, or which is
    meant is unknown."""
    if master_key is None or config.scheme == "ably" or config.encryption_master_key == master_key:
        return config
    if config.encryption_master_key is not None:
        raise ConfigError(
            f"{config.scheme}:// URL's encryption_master_key differs from PUSHER_ENCRYPTION_MASTER_KEY_BASE64: "
            "set the key in one place"
        )
    return replace(config, encryption_master_key=master_key)

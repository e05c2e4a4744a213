"""Malformed gateway configuration (rules file, JWT keys, forward URL) is refused at start-up with a ConfigError, and
``relay serve`` exits 2 with one line instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from relay.errors import ConfigError
from relay.gateway import GatewaySettings, create_app
from tests.cli_support import NOT_UTF8, assert_refused, run_relay, write

PUSHER = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s"}

# -- the gateway: environment, rules file, keys ---------------------------------------------------------------------


def gateway(env: dict[str, str]) -> None:
    create_app(GatewaySettings.from_env({"RELAY_URL": "memory://audit", **env}))


@pytest.mark.parametrize(
    ("rules", "fragments"),
    [
        ("[[channels]]\npattern = 'private-{a}-{a}'\n", ["private-{a}-{a}"]),  # re.error escaped
        ("[[channels]]\npattern = 'private-{sub'\n", ["private-{sub"]),  # matched the literal text only
        ("[[channels]]\npattern = 'private-{1x}'\n", ["private-{1x}"]),
        ("[[channels]]\npattern = ''\n", ["pattern"]),
        ("[[channels]]\npattern = 'presence-x'\nuser_info_claims = 'name'\n", ["user_info_claims"]),  # n, a, m, e
        ("[[channels]]\npattern = 'presence-x'\nuser_info_claims = [1]\n", ["user_info_claims"]),
        ("channels = 5\n", ["channels"]),  # TypeError
        ("channels = [5]\n", ["channels[0]"]),  # TypeError
        ("[channels]\npattern = 'private-{sub}'\n", ["[[channels]]"]),  # said "unknown key(s) a, e, n, p, r, t"
        ("chanels = 1\n[[channels]]\npattern = 'private-user-{sub}'\n", ["chanels"]),  # a typo, silently ignored
        ("x = " + "[" * 600 + "]" * 600, ["is nested too deeply to be a rules file"]),  # RecursionError in tomllib
        ("x = " + "9" * 5000, ["a number is too long"]),  # ValueError: over 4,300 digits
    ],
)
def test_rules_file_mistakes_are_config_errors(tmp_path: Path, rules: str, fragments: list[str]) -> None:
    path = write(tmp_path, rules, "rules.toml")
    with pytest.raises(ConfigError) as caught:
        gateway({"RELAY_RULES_FILE": str(path)})
    for fragment in fragments:
        assert fragment in caught.value.message, caught.value.message


def test_a_rules_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, NOT_UTF8, "rules.toml")
    with pytest.raises(ConfigError, match="rules file"):
        gateway({"RELAY_RULES_FILE": str(path)})


@pytest.mark.parametrize("keys", [[], [{"kty": "RSA"}], [1]], ids=["no keys", "incomplete key", "not a key"])
def test_a_jwks_without_usable_keys_is_a_config_error(tmp_path: Path, keys: list[object]) -> None:
    """PyJWKSetError escaped from create_app (a traceback from ``relay serve``)."""
    path = write(tmp_path, json.dumps({"keys": keys}), "jwks.json")
    with pytest.raises(ConfigError, match="RELAY_JWKS_FILE"):
        gateway({"RELAY_JWKS_FILE": str(path)})


def test_a_jwks_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    """json.loads raised RecursionError, which escaped as a traceback."""
    path = write(tmp_path, '{"keys": ' + "[" * 5000 + "]" * 5000 + "}", "jwks.json")
    with pytest.raises(ConfigError) as caught:
        gateway({"RELAY_JWKS_FILE": str(path)})
    assert caught.value.message == f"JWKS file {path} (RELAY_JWKS_FILE) is nested too deeply to be a JWKS file"


def test_a_jwks_or_key_file_is_read_as_every_file_a_user_writes(tmp_path: Path) -> None:
    """With a byte order mark (Windows editors save one) a JWKS was refused, "Unexpected UTF-8 BOM"; a missing file
    said "[Errno 2] No such file or directory": they read as the config, rules and pricing files do."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(private_key.public_key())), "kid": "k1", "alg": "RS256"}
    with_bom = tmp_path / "jwks.json"
    with_bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"keys": [jwk]}).encode())
    gateway({"RELAY_JWKS_FILE": str(with_bom)})  # starts
    with pytest.raises(ConfigError) as caught:
        gateway({"RELAY_JWKS_FILE": str(tmp_path / "absent.json")})
    assert caught.value.message == f"RELAY_JWKS_FILE {tmp_path / 'absent.json'} does not exist"
    with pytest.raises(ConfigError) as caught:
        gateway({"RELAY_JWT_PUBLIC_KEY": str(tmp_path / "absent.pem")})
    assert caught.value.message == (
        f"RELAY_JWT_PUBLIC_KEY is neither a PEM key nor a readable PEM file: the file {tmp_path / 'absent.pem'} does "
        "not exist"
    )


def test_a_public_key_that_is_not_a_key_is_refused_at_startup(tmp_path: Path) -> None:
    """Accepted, it made every valid JWT a 401 "its alg ... does not fit the key of RELAY_JWT_PUBLIC_KEY"."""
    garbage = "-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n"
    with pytest.raises(ConfigError, match="RELAY_JWT_PUBLIC_KEY"):
        gateway({"RELAY_JWT_PUBLIC_KEY": garbage})
    with pytest.raises(ConfigError, match="RELAY_JWT_PUBLIC_KEY"):
        gateway({"RELAY_JWT_PUBLIC_KEY": str(write(tmp_path, garbage, "key.pem"))})


def test_two_jwt_key_sources_at_once_are_a_config_error(tmp_path: Path) -> None:
    """docs/gateway.md: the public key and the JWKS are "instead" of the secret; with both, the secret silently won
    and every RS256/ES256 token was refused."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    jwk = {**json.loads(RSAAlgorithm.to_jwk(private_key.public_key())), "kid": "k1", "alg": "RS256"}
    jwks = write(tmp_path, json.dumps({"keys": [jwk]}), "jwks.json")
    for second in ({"RELAY_JWT_PUBLIC_KEY": public_pem}, {"RELAY_JWKS_FILE": str(jwks)}):
        with pytest.raises(ConfigError, match="RELAY_JWT_SECRET"):
            gateway({"RELAY_JWT_SECRET": "s" * 32, **second})


def test_an_hs256_secret_shorter_than_32_bytes_is_a_config_error() -> None:
    """docs/gateway.md's placeholder pasted as is (``RELAY_JWT_SECRET=…``) started a gateway whose one-character
    secret anyone could find by trying, and so sign a JWT for any user. 32 bytes (UTF-8) is the least."""
    with pytest.raises(ConfigError) as refused:
        gateway({"RELAY_JWT_SECRET": "…"})
    assert refused.value.message == (
        "RELAY_JWT_SECRET is 3 bytes; an HS256 secret has at least 32 (RFC 7518 §3.2): give the one your auth "
        "provider signs with, or make one with `openssl rand -hex 32`"
    )
    with pytest.raises(ConfigError, match="is 31 bytes"):
        gateway({"RELAY_JWT_SECRET": "s" * 31})
    settings = GatewaySettings.from_env({"RELAY_URL": "memory://audit", "RELAY_JWT_SECRET": "s" * 32})
    assert settings.jwt_secret == "s" * 32


def test_a_public_key_given_as_the_hs256_secret_is_a_config_error() -> None:
    """PyJWT refuses a PEM key or certificate as an HMAC secret at every JWT: a public key put in the wrong setting
    made every signed-in request a 500. It stops the gateway at start, naming the setting it belongs in."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(ConfigError) as refused:
        gateway({"RELAY_JWT_SECRET": public_pem})
    assert refused.value.message == (
        "RELAY_JWT_SECRET holds a PEM key or certificate, which is no HS256 secret: for RS256 or ES256 tokens set "
        "RELAY_JWT_PUBLIC_KEY to the public key instead"
    )


def test_a_webhook_forward_url_that_is_not_a_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="RELAY_WEBHOOK_FORWARD_URL"):
        gateway({"RELAY_WEBHOOK_FORWARD_URL": "not a url"})


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"RELAY_URL": "emulator://k:s@[::1/apps/1"}, "emulator://"),
        ({**PUSHER, "PUSHER_PORT": "²"}, "PUSHER_PORT"),
        ({"RELAY_URL": "memory://audit", "RELAY_JWKS_FILE": "{jwks}"}, "RELAY_JWKS_FILE"),
        ({"RELAY_URL": "memory://audit", "RELAY_RULES_FILE": "{rules}"}, "private-{a}-{a}"),
    ],
    ids=["broken IPv6 URL", "non-ASCII digit port", "JWKS without keys", "duplicate placeholder"],
)
async def test_relay_serve_refuses_bad_configuration_with_exit_2(
    tmp_path: Path, env: dict[str, str], fragment: str
) -> None:
    files = {
        "{jwks}": str(write(tmp_path, json.dumps({"keys": []}), "jwks.json")),
        "{rules}": str(write(tmp_path, "[[channels]]\npattern = 'private-{a}-{a}'\n", "rules.toml")),
    }
    env = {name: files.get(value, value) for name, value in env.items()}
    assert_refused(await run_relay("serve", "--port", "0", env=env), fragment)


COOKIE_NAME_HINT = 'one has no spaces, nothing beyond ASCII, no control characters and none of =;,"'


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RELAY_CORS_ORIGINS": "https://bücher.de"},
            "RELAY_CORS_ORIGINS: 'https://bücher.de' has a host beyond ASCII, which browsers send in its punycode "
            "form in Origin (https://xn--bcher-kva.de): list the origin that way, as the browser's devtools show it",
        ),
        (  # UTS #46's mapping, as browsers now make it: IDNA 2003 made it strasse.de
            {"RELAY_CORS_ORIGINS": "https://straße.de:8443"},
            "RELAY_CORS_ORIGINS: 'https://straße.de:8443' has a host beyond ASCII, which browsers send in its "
            "punycode form in Origin (https://xn--strae-oqa.de:8443): list the origin that way, as the browser's "
            "devtools show it",
        ),
        *(
            (
                {"RELAY_JWT_COOKIE": name},
                f"RELAY_JWT_COOKIE: {name!r} is not a cookie name a browser sends: {COOKIE_NAME_HINT}",
            )
            for name in ("my session", "a=b", "sé")
        ),
        *(
            (
                {"RELAY_API_TOKEN": token},
                "RELAY_API_TOKEN has a control character, a character beyond ASCII, or a space at an end, which an "
                "HTTP header does not carry as written: make one with `openssl rand -hex 32`",
            )
            for token in ("tökén-0123456789", "tab\there", "token\x7f-0123456789")
        ),
    ],
)
def test_settings_that_could_never_match_a_request_are_refused_at_start(env: dict[str, str], message: str) -> None:
    """Each started and then failed every request: a browser sends the origin's host in punycode, never sends a
    cookie whose name is not a token, and cannot put a non-ASCII API token in a header (fetch throws)."""
    with pytest.raises(ConfigError) as caught:
        gateway(env)
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("env", "accepted"),
    [
        ({"RELAY_CORS_ORIGINS": "https://xn--bcher-kva.de"}, ("https://xn--bcher-kva.de",)),
        ({"RELAY_JWT_COOKIE": "__Host-session.v2"}, "__Host-session.v2"),
        ({"RELAY_JWT_COOKIE": "auth[token]"}, "auth[token]"),  # PHP's: browsers set and send it
        ({"RELAY_API_TOKEN": "two words-0123456789"}, "two words-0123456789"),  # a space inside travels
        ({"RELAY_API_TOKEN": "~!#$%&'*+-.^_`|0123456789"}, "~!#$%&'*+-.^_`|0123456789"),
    ],
)
def test_the_ascii_forms_of_those_settings_are_taken(env: dict[str, str], accepted: object) -> None:
    settings = GatewaySettings.from_env({"RELAY_URL": "memory://audit", **env})
    name = next(iter(env)).removeprefix("RELAY_").lower()
    assert getattr(settings, name) == accepted


async def test_relay_serve_refuses_a_unicode_cors_origin_with_exit_2() -> None:
    env = {"RELAY_URL": "memory://audit", "RELAY_CORS_ORIGINS": "https://bücher.de"}
    assert_refused(await run_relay("serve", "--port", "0", env=env), "(https://xn--bcher-kva.de)")


SECRET_32 = "s" * 40


@pytest.mark.parametrize("name", ["RELAY_JWT_SECRET", "RELAY_JWT_AUDIENCE", "RELAY_JWT_ISSUER", "RELAY_JWT_USER_CLAIM"])
def test_a_variable_holding_a_byte_that_is_not_utf8_is_refused_naming_it(name: str) -> None:
    """`RELAY_JWT_AUDIENCE=$'shop\\xff'`: Python keeps the byte as a lone surrogate. The secret's was a
    UnicodeEncodeError traceback; the audience, issuer or user claim was accepted, and every JWT then refused."""
    value = (SECRET_32 if name == "RELAY_JWT_SECRET" else "shop") + "\udcff"
    with pytest.raises(ConfigError) as caught:
        gateway({"RELAY_JWT_SECRET": SECRET_32, name: value})
    assert caught.value.message == (
        f"{name} is not UTF-8 text: its character {len(value)} is a byte that could not be decoded (the environment "
        "keeps such bytes as they were); set it again"
    )


async def test_relay_serve_refuses_a_jwt_secret_that_is_not_utf8_with_exit_2() -> None:
    env = {"RELAY_URL": "memory://audit", "RELAY_JWT_SECRET": SECRET_32 + "\udcff"}
    assert_refused(await run_relay("serve", "--port", "0", env=env), "RELAY_JWT_SECRET is not UTF-8 text")

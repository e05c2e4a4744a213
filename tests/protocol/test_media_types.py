import pytest

from relay.protocol.media_types import is_json_media_type, media_type


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", "application/json"),
        ("Application/JSON; charset=UTF-8", "application/json"),
        ("  application/msgpack ;q=1", "application/msgpack"),
        ("", ""),
    ],
)
def test_a_media_type_is_read_without_parameters_or_case(content_type: str, expected: str) -> None:
    assert media_type(content_type) == expected


@pytest.mark.parametrize(
    ("content_type", "is_json"),
    [
        ("application/json", True),
        ("APPLICATION/JSON;charset=utf-8", True),
        ("application/vnd.api+json", True),
        ("application/x-www-form-urlencoded", False),
        ("text/json", False),
        ("text/plain+json", False),
        ("application/jsonp", False),
        ("", False),
    ],
)
def test_json_is_application_json_or_a_json_suffix(content_type: str, is_json: bool) -> None:
    assert is_json_media_type(content_type) is is_json

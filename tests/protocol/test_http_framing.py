import pytest

from relay.protocol.http_framing import chunked_alone


@pytest.mark.parametrize(
    ("transfer_encodings", "decoded"),
    [
        ([b"chunked"], True),
        ([b" Chunked "], True),
        ([b"CHUNKED"], True),
        ([b"gzip, chunked"], False),
        ([b"identity,chunked"], False),
        ([b"chunked, identity"], False),
        ([b"chunked", b"chunked"], False),
        ([b"gzip", b"chunked"], False),
        ([b""], False),
        ([], False),
    ],
)
def test_only_chunked_alone_over_every_transfer_encoding_header_is_decoded(
    transfer_encodings: list[bytes], decoded: bool
) -> None:
    assert chunked_alone(transfer_encodings) is decoded

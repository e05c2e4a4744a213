"""A request's ``Content-Type`` read as every Relay server reads it."""

from __future__ import annotations


def media_type(content_type: str) -> str:
    """The media type of a ``Content-Type`` value, without parameters, in lower case (RFC 9110 §8.3.1: the type and
    subtype are case-insensitive)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/*+json`` (parameters and case aside), as FastAPI reads a body as JSON: the
    publish routes took ``application/vnd.api+json`` and the auth routes refused it (415)."""
    kind = media_type(content_type)
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))

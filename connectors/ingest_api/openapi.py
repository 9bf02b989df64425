"""The API's OpenAPI 3.1 document, generated from the loaded feed contracts (the feeds that accept `rest`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                                "schema": {"type": "integer", "minimum": 1}}}
_HEADERS: dict[str, dict[str, Any]] = {
    "401": {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}},
    "409": _RETRY_AFTER, "429": _RETRY_AFTER, "503": _RETRY_AFTER,
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
# The media types each feed format is accepted as; the app refuses others with 415.
CONTENT_TYPES = {
    "json": ("application/json", "application/x-ndjson"),
    "csv": ("text/csv",),
    "x12": ("application/edi-x12", "text/plain"),
    "avro": ("application/avro", "application/octet-stream"),
}
_REFUSALS = {
    "400": "malformed body (PHI-free reason code)", "401": "missing or wrong API key for this feed",
    "403": "the feed does not accept the rest door", "404": "unknown feed",
    "408": "request head or body not received in time",
    "409": "a request with this Idempotency-Key is in progress", "413": "body or batch too large",
    "415": "content type does not suit the feed's format", "422": "Idempotency-Key reused with another body",
    "429": "feed rate limit; see Retry-After", "503": "broker unavailable; retry after Retry-After",
}


def openapi_document(contracts: Mapping[str, Any], settings: Any) -> dict[str, Any]:
    """The document: one path with the REST feeds as an enum, per-format request bodies, every refusal."""
    feeds = sorted(f for f, c in contracts.items() if "rest" in c.sources)
    formats = {contracts[f].format for f in feeds}
    json_record = {"type": "object", "description": "one canonical record (see schemas/*.schema.json)"}
    content: dict[str, Any] = {}
    for fmt in sorted(formats):
        for media in CONTENT_TYPES[fmt]:
            if media == "application/json":
                schema: dict[str, Any] = {"oneOf": [json_record, {"type": "array", "items": json_record,
                                                                   "minItems": 1, "maxItems": settings.max_batch}]}
            else:
                schema = {"type": "string", "format": "binary"}
            content[media] = {"schema": schema}
    responses: dict[str, Any] = {
        "202": {"description": "accepted: produced to raw.<feed>", "content": {"application/json": {"schema": {
            "type": "object", "required": ["receipt_id", "records"],
            "properties": {"receipt_id": {"type": "string"}, "records": {"type": "integer", "minimum": 1}}}}},
            "headers": {"Idempotent-Replayed": {"description": "the stored receipt of an earlier request with this "
                                                              "Idempotency-Key and body; nothing was produced",
                                                "schema": {"type": "string", "const": "true"}}}},
    }
    responses |= {code: {"description": text, "content": {"application/json": {"schema": _ERROR}}}
                  | ({"headers": _HEADERS[code]} if code in _HEADERS else {})
                  for code, text in _REFUSALS.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "medistream ingestion API", "version": "1.0.0",
                 "description": "Feeds POST records; the pipeline validates, protects and routes them."},
        "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/feeds/{feed}/records": {"post": {
                "operationId": "postRecords",
                "parameters": [
                    {"name": "feed", "in": "path", "required": True, "schema": {"type": "string", "enum": feeds}},
                    {"name": "Idempotency-Key", "in": "header", "required": False,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 128}},
                ],
                "requestBody": {"required": True, "content": content},
                "responses": responses,
            }},
            "/healthz": {"get": {"operationId": "health", "security": [], "responses": {"200": {
                "description": "serving, with the feeds that accept the rest door",
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status", "feeds"], "properties": {
                        "status": {"const": "ok"}, "feeds": {"type": "array", "items": {"type": "string"}}}}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "security": [], "responses": {"200": {
                "description": "this document", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
    }

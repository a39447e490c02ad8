"""The receiver's ASGI app: Callr webhooks and Actions pushes in, durable landing, 2xx out.

Endpoints:

- `POST /callr/webhook` — Callr webhook events (`v2.call.inbound.ended`, ...); HMAC signed.
- `POST /callr/push` — Actions `fetch@v2` pushes (`{"cdr": {...}}`); bearer token.
- `GET /healthz` — 200 with counters while an event can be stored, else 503 with the reason.

A request is checked in this order, and the first failure answers (nothing is stored):

1. size and time: `Content-Length` or the streamed body above `CDR_RECEIVER_MAX_BODY_BYTES` ->
   413; the body not received within `CDR_RECEIVER_REQUEST_TIMEOUT_S` -> 408 (both close the
   connection; the request head has its own limits, see `server`);
2. authentication (see `auth`) -> 401;
3. `Content-Type` must be `application/json` (or `+json`), charset UTF-8 if given -> 415;
4. UTF-8, JSON syntax, nesting depth (`CDR_RECEIVER_MAX_JSON_DEPTH`), no lone surrogate -> 400;
5. the envelope (see `cdr_pipeline.callr.events`): not an object or no CDR -> 422.

Then the delivery is handed to the landing writer and the handler waits for its commit:
200 `{"status": "stored", "seq": N}` (or `"duplicate"` for a redelivery, with the first `seq`),
or 503 if the store cannot be written (Callr retries). Event types without a final CDR answer
200 `{"status": "ignored"}`. Every answer is JSON with a `reason` on errors; no 5xx for bad
input. Secrets, signatures and query strings are never logged.
"""

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cdr_pipeline.callr.events import Delivery, PayloadError, cdr_value, parse_json, read_delivery
from cdr_pipeline.config import Settings
from cdr_pipeline.landing import LandingRecord, landing_path
from cdr_pipeline.receiver import auth
from cdr_pipeline.receiver.landing import LandingWriter

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/callr/webhook"
PUSH_PATH = "/callr/push"
HEALTH_PATH = "/healthz"
# Ignored event types are counted by name up to this many names of up to this many characters;
# the rest under `ignored_type:(other)`, so a sender inventing types cannot grow /healthz.
MAX_COUNTED_TYPES = 32
MAX_TYPE_CHARS = 64
_HEALTH_WAIT_S = 5.0
_CLOSE = {"Connection": "close"}  # after 408/413: the rest of the body is not read


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class ReceiverConfig:
    """Everything the app needs, resolved once at start-up."""

    store_path: Path
    policy: auth.AuthPolicy
    credentials: auth.Credentials
    max_body_bytes: int
    max_json_depth: int
    body_timeout_s: float = 10.0

    @classmethod
    def from_settings(
        cls, settings: Settings, credentials: auth.Credentials | None = None
    ) -> "ReceiverConfig":
        return cls(
            store_path=landing_path(settings.data_dir),
            policy=auth.AuthPolicy.from_settings(settings),
            credentials=auth.Credentials.from_env() if credentials is None else credentials,
            max_body_bytes=settings.receiver_max_body_bytes,
            max_json_depth=settings.receiver_max_json_depth,
            body_timeout_s=float(settings.receiver_request_timeout_s),
        )


class _Counters(Counter[str]):
    def ignored(self, source: str, event_type: str | None) -> None:
        self[f"{source}_ignored"] += 1
        name = (event_type or "")[:MAX_TYPE_CHARS]
        counted = {k for k in self if k.startswith("ignored_type:")}
        key = f"ignored_type:{name}"
        if key not in counted and len(counted) >= MAX_COUNTED_TYPES:
            key = "ignored_type:(other)"
        self[key] += 1


def create_app(settings: Settings, credentials: auth.Credentials | None = None) -> Starlette:
    """The receiver app for `settings`; secrets from the environment unless `credentials`."""
    return create_app_from_config(ReceiverConfig.from_settings(settings, credentials))


def create_app_from_config(config: ReceiverConfig) -> Starlette:
    """The receiver app for a resolved `ReceiverConfig` (its writer is `app.state.writer`)."""
    endpoints = _Endpoints(config)
    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, endpoints.webhook, methods=["POST"]),
            Route(PUSH_PATH, endpoints.push, methods=["POST"]),
            Route(HEALTH_PATH, endpoints.healthz, methods=["GET"]),
        ],
        lifespan=endpoints.lifespan,
    )


class _Refused(Exception):
    """A request refused at one of its checks: the status, reason and headers to answer."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


class _Endpoints:
    """The app's lifespan and handlers, sharing one config and one set of counters."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.counters = _Counters()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        config = self.config
        writer = LandingWriter(config.store_path)
        app.state.writer = writer
        log.info(
            "receiver: landing events in %s (webhook auth: %s; push auth: %s)",
            config.store_path,
            auth.endpoint_auth("webhook", config.credentials, config.policy),
            auth.endpoint_auth("push", config.credentials, config.policy),
        )
        try:
            yield
        finally:
            writer.close()

    async def webhook(self, request: Request) -> JSONResponse:
        return await self.receive(request, "webhook")

    async def push(self, request: Request) -> JSONResponse:
        return await self.receive(request, "push")

    async def healthz(self, request: Request) -> JSONResponse:
        writer: LandingWriter | None = getattr(request.app.state, "writer", None)
        if writer is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        try:
            health = await asyncio.wait_for(asyncio.wrap_future(writer.health()), _HEALTH_WAIT_S)
            error = health.error
        except TimeoutError:
            error = f"the landing writer did not answer within {_HEALTH_WAIT_S:g} s"
        document: dict[str, Any] = {"status": "failing" if error else "ok"}
        if error:
            document["reason"] = f"the landing store cannot be written: {error}"
        document["counters"] = dict(sorted(self.counters.items()))
        return JSONResponse(document, status_code=503 if error else 200)

    async def receive(self, request: Request, source: str) -> JSONResponse:
        """Check a delivery in the module docstring's order; land it, or answer the refusal."""
        peer = request.client.host if request.client else "?"
        try:
            body = await self._body(request)
            method = self._authenticate(request, source, body)
            delivery = self._delivery(request, source, body)
        except _Refused as refused:
            return _refuse(
                self.counters, source, peer, refused.status, refused.reason, refused.headers
            )
        if not delivery.stores_call:
            self.counters.ignored(source, delivery.event_type)
            shown = (delivery.event_type or "")[:MAX_TYPE_CHARS]
            return JSONResponse(
                {"status": "ignored", "reason": f"event type {shown!r} carries no final CDR"}
            )
        return await self._land(request, source, peer, method, _record(source, delivery, body))

    async def _body(self, request: Request) -> bytes:
        """The body, within the size and time limits (413 / 408, closing the connection)."""
        config = self.config
        try:
            async with asyncio.timeout(config.body_timeout_s):
                return await _read_body(request, config.max_body_bytes)
        except _TooLarge:
            limit = f"{config.max_body_bytes} bytes (CDR_RECEIVER_MAX_BODY_BYTES)"
            raise _Refused(413, f"body larger than {limit}", _CLOSE) from None
        except TimeoutError:
            limit = f"{config.body_timeout_s:g} s (CDR_RECEIVER_REQUEST_TIMEOUT_S)"
            raise _Refused(408, f"body not received within {limit}", _CLOSE) from None

    def _authenticate(self, request: Request, source: str, body: bytes) -> str:
        """The authentication method that accepted the request (401 otherwise)."""
        config = self.config
        try:
            return auth.authenticate(
                source, body, request.headers, config.credentials, config.policy
            )
        except auth.AuthError as error:
            raise _Refused(401, str(error)) from None

    def _delivery(self, request: Request, source: str, body: bytes) -> Delivery:
        """What the body delivers: JSON content type (415), then its JSON and envelope."""
        content_type_error = _check_content_type(request.headers.get("content-type"))
        if content_type_error:
            raise _Refused(415, content_type_error)
        try:
            document = parse_json(body, max_depth=self.config.max_json_depth)
            return read_delivery(document, source=source)
        except PayloadError as error:
            raise _Refused(error.status, error.reason) from None

    async def _land(
        self, request: Request, source: str, peer: str, method: str, record: LandingRecord
    ) -> JSONResponse:
        """Hand the record to the writer and answer once it is committed (503 if it fails)."""
        counters = self.counters
        try:
            stored = await asyncio.wrap_future(request.app.state.writer.submit(record))
        except Exception as error:
            counters[f"{source}_store_failed"] += 1
            log.error("receiver: could not land a %s event from %s: %s", source, peer, error)
            return JSONResponse(
                {"status": "error", "reason": "the landing store could not be written; retry"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        counters[f"{source}_{'duplicate' if stored.duplicate else 'stored'}"] += 1
        counters[f"auth_{method}"] += 1
        return JSONResponse(
            {"status": "duplicate" if stored.duplicate else "stored", "seq": stored.seq}
        )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _check_content_type(value: str | None) -> str | None:
    """None if `value` is JSON in UTF-8, else the reason to refuse it."""
    if not value:
        return "missing Content-Type: send application/json"
    media, *params = (part.strip() for part in value.split(";"))
    media = media.lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        return f"Content-Type must be application/json, got {media[:60]!r}"
    for param in params:
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return f"charset must be utf-8, got {charset.strip()[:30]!r}"
    return None


def _refuse(
    counters: Counter[str],
    source: str,
    peer: str,
    status: int,
    reason: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    counters[f"{source}_refused_{status}"] += 1
    log.warning("receiver: %s from %s refused with %d: %s", source, peer, status, reason)
    return JSONResponse(
        {"status": "refused", "reason": reason}, status_code=status, headers=headers
    )


def _scalar_text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _record(source: str, delivery: Delivery, body: bytes) -> LandingRecord:
    cdr = delivery.cdr or {}
    if delivery.event_id:
        dedup_key = f"{source}:id:{delivery.event_id}"
    else:
        canonical = json.dumps(cdr, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        dedup_key = f"{source}:sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"
    text = body.decode("utf-8")
    return LandingRecord(
        received_at=dt.datetime.now(dt.UTC),
        source=source,
        event_type=delivery.event_type,
        event_id=delivery.event_id,
        dedup_key=dedup_key,
        callid=_scalar_text(cdr_value(cdr, "callid")),
        started=_scalar_text(cdr_value(cdr, "started")),
        cdr_path=delivery.cdr_path,
        body=text[1:] if text.startswith("\ufeff") else text,
    )


def serve(*args: Any, **kwargs: Any) -> None:
    """Run the receiver until interrupted: `server.serve` (kept here for the CLI's import)."""
    from cdr_pipeline.receiver.server import serve as run_server

    run_server(*args, **kwargs)

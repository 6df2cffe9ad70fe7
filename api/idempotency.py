"""Idempotency keys: a POST repeated with the same `Idempotency-Key` is answered once.

The first request with a key claims it in the database (a unique row per caller and key),
runs, and its answer is stored; every repeat, concurrent or later, waits for that answer and
gets the same status and body, marked `Idempotent-Replayed: true`. The same key with a
different method, path, query or body is refused with 409 and changes nothing. Answers of
5xx (or a crash) release the key, so the client may try again.

Keys belong to the caller (the hash of its Authorization header) and are kept `KEY_TTL`.

NOTE: the route's own transaction and the stored answer are two commits; if the server
dies between them, the key stays claimed until `STALE_CLAIM` passes, after which a repeat
runs the request again. Routes that create resources should therefore still be safe to
repeat on their own (submission reuses specs, ingest ignores stored points).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import IdempotencyKey, utcnow

log = logging.getLogger(__name__)

HEADER = "idempotency-key"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")
KEY_TTL = dt.timedelta(hours=24)
STALE_CLAIM = dt.timedelta(minutes=5)
"""A claim without an answer for this long belongs to a request that died with its server."""
WAIT_FOR_ANSWER_S = 120.0
POLL_S = 0.05
PURGE_EVERY_S = 60.0

Verdict = Literal["run", "replay", "mismatch", "busy"]


@dataclass(frozen=True)
class Claim:
    """What the ledger says about a request: run it, replay an answer, or refuse it."""

    verdict: Verdict
    row_id: int | None = None
    status_code: int | None = None
    content_type: str | None = None
    body: bytes | None = None


class KeyLedger:
    """The `idempotency_keys` table: claim a key, store its answer, or release it."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions
        self._last_purge = 0.0

    def claim(self, caller: str, key: str, request_hash: str) -> Claim:
        """Claim `key` for this request, or say what an earlier request with it left."""
        self._purge_expired()
        try:
            with self.sessions.begin() as session:
                row = IdempotencyKey(caller=caller, key=key, request_hash=request_hash)
                session.add(row)
                session.flush()
                return Claim("run", row.id)
        except IntegrityError:
            return self._existing(caller, key, request_hash)

    def _existing(self, caller: str, key: str, request_hash: str) -> Claim:
        with self.sessions.begin() as session:
            row = session.scalars(
                select(IdempotencyKey).where(
                    IdempotencyKey.caller == caller, IdempotencyKey.key == key
                )
            ).first()
            if row is None:  # released (5xx) or purged since: claim it afresh
                return Claim("busy")
            if row.request_hash != request_hash:
                return Claim("mismatch")
            if row.status_code is not None:
                return Claim("replay", row.id, row.status_code, row.content_type, row.body)
            if _as_utc(row.created_at) < utcnow() - STALE_CLAIM:
                log.warning("idempotency key %r: reclaiming a claim left by a dead request", key)
                row.created_at = utcnow()
                return Claim("run", row.id)
            return Claim("busy")

    def store(self, row_id: int, status_code: int, content_type: str | None, body: bytes) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.id == row_id)
                .values(
                    status_code=status_code,
                    content_type=content_type,
                    body=body,
                    completed_at=utcnow(),
                )
            )

    def release(self, row_id: int) -> None:
        with self.sessions.begin() as session:
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id))

    def _purge_expired(self) -> None:
        if time.monotonic() - self._last_purge < PURGE_EVERY_S:
            return
        self._last_purge = time.monotonic()
        with self.sessions.begin() as session:
            session.execute(
                delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - KEY_TTL)
            )


class IdempotentPosts:
    """ASGI middleware applying idempotency keys to every POST that carries one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._ledger: KeyLedger | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", [])) if scope["type"] == "http" else {}
        raw_key = headers.get(HEADER.encode())
        if scope["type"] != "http" or scope["method"] != "POST" or raw_key is None:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not KEY_PATTERN.match(key):
            detail = "Idempotency-Key must be 1 to 200 printable ASCII characters"
            await _answer(send, 400, {"detail": detail})
            return
        body = await _read_body(receive)
        if body is None:  # the client left, or the body limit answered already
            return
        caller = hashlib.sha256(headers.get(b"authorization", b"")).hexdigest()
        claim = await self._claim(scope, caller, key, _request_hash(scope, body))
        await self._respond(scope, body, receive, send, key, claim)

    def ledger(self, scope: Scope) -> KeyLedger:
        if self._ledger is None:
            self._ledger = KeyLedger(scope["app"].state.store.sessions)
        return self._ledger

    async def _claim(self, scope: Scope, caller: str, key: str, request_hash: str) -> Claim:
        """Claim the key, waiting while another request with it is being answered."""
        ledger = self.ledger(scope)
        deadline = time.monotonic() + WAIT_FOR_ANSWER_S
        while True:
            claim = await to_thread.run_sync(ledger.claim, caller, key, request_hash)
            if claim.verdict != "busy" or time.monotonic() > deadline:
                return claim
            await asyncio.sleep(POLL_S)

    async def _respond(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, key: str, claim: Claim
    ) -> None:
        if claim.verdict == "mismatch":
            detail = (
                f"Idempotency-Key {key!r} was used for a different request; "
                "send a new key for a new request"
            )
            await _answer(send, 409, {"detail": detail})
        elif claim.verdict == "busy":
            detail = f"a request with Idempotency-Key {key!r} is still being answered; retry"
            await _answer(send, 409, {"detail": detail})
        elif claim.verdict == "replay":
            assert claim.status_code is not None
            await _replay(send, claim)
        else:
            assert claim.row_id is not None
            await self._run_and_store(scope, body, receive, send, claim.row_id)

    async def _run_and_store(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, row_id: int
    ) -> None:
        """Run the request once, forward its answer, and keep it for the repeats."""
        ledger = self.ledger(scope)
        answer: dict[str, Any] = {"status": 500, "content_type": None, "chunks": []}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["content_type"] = dict(message.get("headers", [])).get(b"content-type")
            elif message["type"] == "http.response.body":
                answer["chunks"].append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, _replay_body(body, receive), capture)
        except BaseException:
            await to_thread.run_sync(ledger.release, row_id)
            raise
        if answer["status"] >= 500:
            await to_thread.run_sync(ledger.release, row_id)
            return
        content_type = answer["content_type"].decode("latin-1") if answer["content_type"] else None
        stored = b"".join(answer["chunks"])
        await to_thread.run_sync(ledger.store, row_id, answer["status"], content_type, stored)


def install_idempotency(app: FastAPI) -> None:
    """Apply idempotency keys to every POST of `app` and document the header on them."""
    app.add_middleware(IdempotentPosts)
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            for operations in build_schema().get("paths", {}).values():
                if "post" in operations:
                    operations["post"].setdefault("parameters", []).append(_HEADER_DOC)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_HEADER_DOC = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Repeats of this POST with the same key get the first answer and change nothing; "
        "the same key with a different body gets 409."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"},
}


def _request_hash(scope: Scope, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode()):
        digest.update(part.encode() + b"\0")
    digest.update(body)
    return digest.hexdigest()


def _as_utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay_body(body: bytes, client: Receive) -> Receive:
    """The body read already, once; after it, whatever the client sends (its disconnect)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await client()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _replay(send: Send, claim: Claim) -> None:
    body = claim.body or b""
    headers = [(b"idempotent-replayed", b"true"), (b"content-length", str(len(body)).encode())]
    if claim.content_type:
        headers.append((b"content-type", claim.content_type.encode("latin-1")))
    await send({"type": "http.response.start", "status": claim.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _answer(send: Send, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

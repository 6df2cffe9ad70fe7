"""Objects the routes share, kept on the application's state, and who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from service.auth import LOCAL, Accounts, Principal
from service.queue import RunQueue
from service.store import Store


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_queue(request: Request) -> RunQueue:
    return request.app.state.queue


def get_accounts(request: Request) -> Accounts:
    return request.app.state.accounts


def current_user(request: Request) -> Principal:
    """The caller named by the bearer token; the local user when auth is off."""
    if not request.app.state.auth_required:
        return LOCAL
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "a bearer token is required (Authorization: Bearer …)", _CHALLENGE)
    principal = request.app.state.accounts.authenticate(token.strip())
    if principal is None:
        raise HTTPException(401, "unknown or revoked token", _CHALLENGE)
    return principal


def worker_only(user: Annotated[Principal, Depends(current_user)]) -> Principal:
    """Attempt reports come from the service's workers (or an admin)."""
    if user.role not in ("service", "admin"):
        raise HTTPException(403, f"user {user.name!r} may not report for workers")
    return user


_CHALLENGE = {"WWW-Authenticate": "Bearer"}

StoreDep = Annotated[Store, Depends(get_store)]
QueueDep = Annotated[RunQueue, Depends(get_queue)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]
UserDep = Annotated[Principal, Depends(current_user)]

"""Team members: who am I, and (for admins) adding users with their first token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.deps import AccountsDep, UserDep
from api.schemas import UserCreated, UserIn, UserOut
from service.auth import NameTakenError

router = APIRouter(tags=["users"])


@router.get("/users/me", response_model=UserOut)
def who_am_i(user: UserDep) -> UserOut:
    """The caller, as the token names it (the local admin when auth is off)."""
    return UserOut(id=user.user_id, name=user.name, role=user.role)


@router.post("/users", status_code=201, response_model=UserCreated)
def add_user(body: UserIn, user: UserDep, accounts: AccountsDep) -> UserCreated:
    """Add a user (admins only); the reply carries its token, which is never shown again."""
    if not user.is_admin:
        raise HTTPException(403, f"user {user.name!r} is not an admin")
    try:
        created, token = accounts.add_user(body.name, "admin" if body.admin else "user")
    except NameTakenError as error:
        raise HTTPException(409, str(error)) from None
    except ValueError as error:
        raise HTTPException(422, f"name: {error}") from None
    return UserCreated(id=created.id, name=created.name, role=created.role, token=token)

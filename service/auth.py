"""Team accounts: users, their bearer tokens (kept hashed), and who may read or change
which run.

A token is 32 random bytes shown once when it is made; the database keeps only its
SHA-256, and a presented token is checked by hashing it and comparing in constant time.
Auth may be off only while the server listens on loopback; the caller is then the local
admin, who reads every run, private ones included.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from service.db import ApiToken, User

log = logging.getLogger(__name__)

Role = Literal["user", "admin", "service"]
AuthMode = Literal["auto", "on", "off"]
ROLES: tuple[Role, ...] = ("user", "admin", "service")
SERVICE_USER = "loope-service"
# A user's name shows in every run list and log line: printable, short, no spaces.
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
TOKEN_PREFIX = "loope_"


class AuthConfigError(ValueError):
    """The server was asked to run without auth where that is not allowed."""


class NameTakenError(ValueError):
    """A user of that name exists already."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user of the database, or the local user when auth is off."""

    user_id: int | None
    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def reads_every_run(self) -> bool:
        """Admins (the local user with auth off among them) and the service's workers."""
        return self.role in ("admin", "service")

    def may_read(self, owner_id: int | None, visibility: str) -> bool:
        """Team runs are read by everyone; a private run by its owner, admins and workers."""
        return visibility != "private" or self.reads_every_run or self.owns(owner_id)

    def owns(self, owner_id: int | None) -> bool:
        return owner_id is not None and owner_id == self.user_id

    def may_change(self, owner_id: int | None) -> bool:
        """Owners and admins may cancel or retry a run; with auth off everyone is local admin."""
        return self.is_admin or self.owns(owner_id)


LOCAL = Principal(user_id=None, name="local", role="admin")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_required(mode: AuthMode, host: str) -> bool:
    """Whether to demand tokens; `auto` means on unless the server listens on loopback."""
    loopback = is_loopback(host)
    if mode == "off" and not loopback:
        raise AuthConfigError(
            f"auth=off is allowed only on a loopback host, not {host!r}; "
            "create tokens with `loope user add NAME` and set LOOPE_AUTH=on"
        )
    return mode == "on" or (mode == "auto" and not loopback)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class Accounts:
    """Users and tokens in the results database."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def add_user(self, name: str, role: Role = "user") -> tuple[User, str]:
        """A new user and its first token; the token is returned once and stored hashed."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: must be one of {', '.join(ROLES)}")
        if USER_NAME.fullmatch(name) is None:
            raise ValueError(
                f"user name {name!r}: 1 to 64 ASCII letters, digits, '.', '_', '@' or '-', "
                "starting with a letter or digit"
            )
        token = new_token()
        try:
            with self.sessions.begin() as session:
                user = User(name=name, role=role)
                session.add(user)
                session.flush()
                session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
        except IntegrityError:
            raise NameTakenError(f"user {name!r} exists already") from None
        log.info("added %s %r", role, name)
        return user, token

    def service_token(self) -> str:
        """A fresh token for the service's workers; earlier service tokens stop working."""
        token = new_token()
        with self.sessions.begin() as session:
            user = session.scalars(select(User).where(User.name == SERVICE_USER)).first()
            if user is None:
                user = User(name=SERVICE_USER, role="service")
                session.add(user)
                session.flush()
            session.execute(
                update(ApiToken).where(ApiToken.user_id == user.id).values(active=False)
            )
            session.add(ApiToken(user_id=user.id, token_hash=hash_token(token)))
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The user holding `token`, or None when it is unknown or revoked."""
        presented = hash_token(token)
        with self.sessions() as session:
            row = session.execute(
                select(ApiToken.token_hash, ApiToken.active, User.id, User.name, User.role)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == presented)
            ).first()
        if row is None or not hmac.compare_digest(row.token_hash, presented) or not row.active:
            return None
        return Principal(user_id=row.id, name=row.name, role=row.role)

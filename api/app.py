"""The FastAPI application: REST API v1 over the store, with the dispatcher alongside."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.deps import current_user, worker_only
from api.docs import install_offline_docs
from api.idempotency import install_idempotency
from api.limits import BodySizeLimit
from api.routes import artifacts, attempts, compare, dashboard, metrics, runs, submit, users
from service.auth import Accounts, auth_required
from service.db import make_engine, make_sessionmaker
from service.queue import RunQueue
from service.settings import Settings
from service.store import Store
from service.sweeps import SpecError

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, *, dispatch: bool = True) -> FastAPI:
    """Build the app; with `dispatch`, it also connects to Ray and runs the dispatcher."""
    settings = settings or Settings()
    require_tokens = auth_required(settings.auth, settings.host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url())
        sessions = make_sessionmaker(engine)
        app.state.store = Store(sessions)
        app.state.queue = RunQueue(sessions)
        app.state.accounts = Accounts(sessions)
        app.state.auth_required = require_tokens
        app.state.dispatcher = None
        app.state.artifact_root = settings.resolved_artifact_root()  # read by the PE view
        worker_settings = _announce_auth(settings, app.state.accounts, require_tokens)
        app.state.worker_token = worker_settings.worker_token
        if dispatch:
            from service.dispatcher import Dispatcher

            app.state.dispatcher = Dispatcher(app.state.store, app.state.queue, worker_settings)
            app.state.dispatcher.start()
        log.info("serving %s", settings.resolved_database_url())
        yield
        if app.state.dispatcher is not None:
            app.state.dispatcher.stop()
        engine.dispose()

    app = FastAPI(title="loope", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_offline_docs(app)
    install_idempotency(app)  # inside the body limit: oversized bodies never reach it
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    signed_in = [Depends(current_user)]
    for module in (submit, runs, metrics, compare, artifacts, users):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=signed_in)
    app.include_router(attempts.router, prefix=API_PREFIX, dependencies=[Depends(worker_only)])
    app.include_router(dashboard.router)
    app.add_exception_handler(SpecError, _spec_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    def health(request: Request) -> dict[str, object]:
        """Liveness, open to all; a signed-in caller also gets how many of the runs it may
        read are in each state."""
        try:
            reader = current_user(request)
        except HTTPException:
            return {"status": "ok"}
        return {"status": "ok", "runs": request.app.state.store.count_by_status(reader)}

    return app


def _announce_auth(settings: Settings, accounts: Accounts, require_tokens: bool) -> Settings:
    """Log whether tokens are required; with auth on, give the workers a fresh token."""
    if not require_tokens:
        log.warning(
            "auth is OFF: anyone who can reach %s:%d acts as admin (allowed on loopback only)",
            settings.host,
            settings.port,
        )
        return settings
    log.info("auth is on: every call needs a bearer token")
    return settings.model_copy(update={"worker_token": accounts.service_token()})


async def _spec_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SpecError)
    return JSONResponse(status_code=422, content={"detail": error.errors})


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    """422 with pydantic's errors; a NaN or infinity the client sent is echoed as a string."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse(
        status_code=422, content={"detail": _finite(jsonable_encoder(error.errors()))}
    )


def _finite(value: object) -> object:
    """`value` with non-finite floats written as "nan", "+inf" or "-inf" (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("+inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value

"""The FastAPI application: REST API v1 over the store, with the dispatcher alongside."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.routes import attempts, compare, dashboard, metrics, runs, submit
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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url())
        sessions = make_sessionmaker(engine)
        app.state.store = Store(sessions)
        app.state.queue = RunQueue(sessions)
        app.state.dispatcher = None
        if dispatch:
            from service.dispatcher import Dispatcher

            app.state.dispatcher = Dispatcher(app.state.store, app.state.queue, settings)
            app.state.dispatcher.start()
        log.info("serving %s", settings.resolved_database_url())
        yield
        if app.state.dispatcher is not None:
            app.state.dispatcher.stop()
        engine.dispose()

    app = FastAPI(title="loope", version="0.1.0", lifespan=lifespan)
    for module in (submit, runs, attempts, metrics, compare):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(dashboard.router)
    app.add_exception_handler(SpecError, _spec_error)

    @app.get(f"{API_PREFIX}/health", tags=["health"])
    def health(request: Request) -> dict[str, object]:
        """Liveness, and how many runs are in each state."""
        return {"status": "ok", "runs": request.app.state.store.count_by_status()}

    return app


async def _spec_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SpecError)
    return JSONResponse(status_code=422, content={"detail": error.errors})

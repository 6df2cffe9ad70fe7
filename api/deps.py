"""Objects the routes share, kept on the application's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.queue import RunQueue
from service.store import Store


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_queue(request: Request) -> RunQueue:
    return request.app.state.queue


StoreDep = Annotated[Store, Depends(get_store)]
QueueDep = Annotated[RunQueue, Depends(get_queue)]

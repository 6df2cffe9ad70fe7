"""Service settings, read from `LOOPE_*` environment variables or given directly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the service keeps its data, how it reaches Ray, and how it dispatches.

    Attributes:
        data_dir: holds the SQLite file and the artifact root unless those are given.
        database_url: a SQLAlchemy URL; SQLite in `data_dir` when empty.
        artifact_root: where workers write checkpoints; must be reachable by every node.
        ray_address: an existing cluster (`auto`, `ray://…`, host:port); a local Ray is
            started when empty.
        ray_num_cpus / ray_num_gpus: the size of the local Ray; GPUs may be declared on a CPU
            machine to exercise scheduling.
        api_url: how workers reach the API; defaults to the address the server listens on.
        auth: `on` demands a bearer token on every call; `off` is allowed only on a loopback
            host; `auto` is on unless the server listens on loopback.
        max_body_bytes: the largest request body accepted (413 above it).
        worker_token: the token workers send; the service makes a fresh one at each start.
    """

    model_config = SettingsConfigDict(env_prefix="LOOPE_")

    data_dir: Path = Path("loope-data")
    database_url: str = ""
    artifact_root: Path | None = None
    ray_address: str = ""
    ray_num_cpus: int | None = None
    ray_num_gpus: int | None = None
    api_url: str = ""
    dispatch_interval_s: float = Field(default=0.2, gt=0)
    host: str = "127.0.0.1"
    port: int = 8000
    auth: Literal["auto", "on", "off"] = "auto"
    max_body_bytes: int = Field(default=16 * 2**20, ge=1024)
    worker_token: str | None = None

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'loope.db').resolve()}"

    def resolved_artifact_root(self) -> Path:
        return (self.artifact_root or self.data_dir / "artifacts").resolve()

    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}"

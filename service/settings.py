"""Service settings, read from `LOOPE_*` environment variables or given directly."""

from __future__ import annotations

from pathlib import Path

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

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'loope.db').resolve()}"

    def resolved_artifact_root(self) -> Path:
        return (self.artifact_root or self.data_dir / "artifacts").resolve()

    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}"

"""docker-compose.yml and the Dockerfile: valid against the Compose specification, and
every command, entry point, file and setting they name exists. (No Docker engine runs here.)

The schema is the Compose specification's JSON schema as shipped in the docker-compose
1.29.2 package on PyPI (compose/config/compose_spec.json), vendored in tests/data.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SCHEMA = json.loads((Path(__file__).parent / "data" / "compose_spec.json").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def command_of(service: dict[str, Any]) -> list[str]:
    """The service's command; the Dockerfile's CMD for our image, [] for others' images."""
    command = service.get("command")
    if command is None:
        return dockerfile_cmd() if "build" in service else []
    return shlex.split(command) if isinstance(command, str) else list(command)


def dockerfile_cmd() -> list[str]:
    [line] = [line for line in dockerfile_lines() if line.startswith("CMD ")]
    return json.loads(line.removeprefix("CMD "))


def dockerfile_lines() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def click_command(group: Any, words: list[str]) -> tuple[Any, list[str]]:
    """The (sub)command of a click or typer group that `words` name, and the words left."""
    command = group
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def assert_options_exist(command: Any, words: list[str], where: str) -> None:
    known = {name for param in command.params for name in getattr(param, "opts", [])}
    for word in words:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert option in known, f"{where}: {option} is not an option of {command.name}"


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_validation_catches_a_mistake() -> None:
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["api"]["depends_on"]["db"] = {"condition": "when_ready"}
    broken["services"]["ray-worker"]["deploy"]["resources"]["reservation"] = {}
    errors = list(jsonschema.Draft201909Validator(SCHEMA).iter_errors(broken))
    assert len(errors) >= 2


def test_the_deployment_has_its_parts() -> None:
    assert {"db", "api", "ray-head", "ray-worker"} <= set(SERVICES)
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["db"]["volumes"]
    devices = SERVICES["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in ("api", "ray-worker"):
        mounts = SERVICES[name]["volumes"]
        assert "artifacts:/artifacts" in mounts and "datasets:/data:ro" in mounts, name
    assert SERVICES["api"]["environment"]["RAY_ADDRESS"].startswith("ray-head:")


def test_named_volumes_and_dependencies_are_declared() -> None:
    for name, service in SERVICES.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in COMPOSE["volumes"], f"{name}: volume {source} undeclared"
        for other in service.get("depends_on", {}):
            assert other in SERVICES, f"{name} depends on unknown service {other}"


def test_loope_commands_exist_with_their_options() -> None:
    from loope.cli import app as loope_app

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    group = typer.main.get_command(loope_app)
    found = 0
    for name, service in SERVICES.items():
        words = command_of(service)
        if words[:1] != ["loope"]:
            continue
        assert "loope" in scripts, "pyproject has no `loope` console script"
        command, rest = click_command(group, words[1:])
        assert command is not group, f"{name}: `loope {words[1]}` is not a command"
        assert_options_exist(command, rest, name)
        found += 1
    assert found >= 1
    command, rest = click_command(group, dockerfile_cmd()[1:])
    assert command.name == "serve"
    assert_options_exist(command, rest, "Dockerfile CMD")


def test_ray_commands_exist_with_their_options() -> None:
    from ray.scripts.scripts import cli as ray_cli

    checked = []
    for name, service in SERVICES.items():
        words = command_of(service)
        if words[:1] != ["ray"]:
            continue
        command, rest = click_command(ray_cli, words[1:])
        assert command.name == "start", name
        assert_options_exist(command, rest, name)
        checked.append(name)
    assert sorted(checked) == ["ray-head", "ray-worker"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_loope_settings_in_the_environment_are_read_by_settings(name: str) -> None:
    fields = {f"LOOPE_{field.upper()}" for field in Settings.model_fields}
    environment = SERVICES[name].get("environment", {})
    names = environment if isinstance(environment, dict) else [e.split("=")[0] for e in environment]
    for variable in names:
        if variable.startswith("LOOPE_"):
            assert variable in fields, f"{name}: {variable} is not a setting of Settings"


def test_the_database_url_names_the_db_service_and_a_driver_we_install() -> None:
    url = SERVICES["api"]["environment"]["LOOPE_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://") and "@db:5432/" in url
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "psycopg" in pyproject


def test_files_the_dockerfile_copies_exist() -> None:
    copies = [line.split()[1:-1] for line in dockerfile_lines() if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    [install] = [line for line in dockerfile_lines() if "pip install" in line]
    extras = re.search(r"\.\[([a-z,]+)\]", install).group(1).split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(extras) <= set(declared["optional-dependencies"])
    build = COMPOSE["x-loope-image"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).exists()

"""The team deployment files: docker-compose.yml's structure, the settings it
passes, the Dockerfile's essentials, docs/deploy.md's examples, and
`docker-compose config` where a Compose executable is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
SILO_IMAGE_SERVICES = ("migrate", "api", "dispatcher", "ray-head", "ray-gpu-worker")
ARTIFACT_SERVICES = ("api", "dispatcher", "ray-head", "ray-gpu-worker")
RAY_PORT = 6380
# Read by the dispatcher, not (yet) fields of Settings.
EXTRA_SILO_VARIABLES = {"SILO_RAY_ADDRESS", "SILO_API_URL"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services(compose: dict) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def volume_targets(service: dict) -> dict[str, str]:
    """Mount target -> source (a named volume or a host path)."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume.get("source", "")
        else:
            source, target = volume.split(":")[:2]
            mounts[target] = source
    return mounts


def allowed_silo_variables() -> set[str]:
    return {f"SILO_{name.upper()}" for name in Settings.model_fields} | EXTRA_SILO_VARIABLES


def test_compose_has_every_service_and_no_version_key(compose):
    assert "version" not in compose
    expected = {"postgres", "migrate", "api", "dispatcher", "ray-head", "ray-gpu-worker"}
    assert expected <= set(services(compose))


def test_postgres_has_a_volume_a_healthcheck_and_variable_credentials(compose):
    postgres = services(compose)["postgres"]
    assert postgres["image"] == "postgres:16"
    env = environment(postgres)
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert re.fullmatch(r"\$\{SILO_DB_\w+:-[^}]+\}", env[key]), (key, env[key])
    mounts = volume_targets(postgres)
    assert mounts["/var/lib/postgresql/data"] in compose["volumes"]
    assert "pg_isready" in healthcheck_text(postgres)


def test_migration_runs_before_the_api(compose):
    svc = services(compose)
    assert command_text(svc["migrate"]) == "silo db upgrade"
    assert depends_on(svc["migrate"]) == {"postgres": "service_healthy"}
    assert svc["migrate"].get("restart", "no") == "no"
    api_deps = depends_on(svc["api"])
    assert api_deps["migrate"] == "service_completed_successfully"
    assert api_deps["postgres"] == "service_healthy"


def test_api_serves_on_8000_with_a_readiness_healthcheck(compose):
    api = services(compose)["api"]
    assert command_text(api) == (
        "silo serve --host 0.0.0.0 --port 8000 --workers ${SILO_API_WORKERS:-2}"
    )
    assert any(str(port).endswith(":8000") for port in api["ports"])
    check = healthcheck_text(api)
    assert "python" in check and "urllib" in check
    assert "http://localhost:8000/readyz" in check


def dispatches(service: dict) -> bool:
    """`silo dispatcher` does; `silo serve` does too unless SILO_DISPATCHER is false."""
    command = command_text(service)
    if "silo dispatcher" in command:
        return True
    disabled = environment(service).get("SILO_DISPATCHER", "").lower() in ("false", "0", "no")
    return "silo serve" in command and not disabled


def test_exactly_one_service_dispatches(compose):
    """The `dispatcher` service joins Ray as a node and dispatches; the API
    container is no Ray node, so `silo serve` there must not start a second one."""
    dispatching = [name for name, svc in services(compose).items() if dispatches(svc)]
    assert dispatching == ["dispatcher"]
    assert environment(services(compose)["api"])["SILO_DISPATCHER"] == "false"


def test_dispatcher_joins_ray_and_waits_for_the_api_and_the_head(compose):
    dispatcher = services(compose)["dispatcher"]
    assert "silo dispatcher" in command_text(dispatcher)
    assert depends_on(dispatcher) == {"api": "service_healthy", "ray-head": "service_healthy"}
    assert environment(dispatcher)["SILO_RAY_ADDRESS"] == f"ray-head:{RAY_PORT}"


def test_ray_head_avoids_port_6379_and_has_a_healthcheck(compose):
    head = services(compose)["ray-head"]
    command = command_text(head)
    assert "ray start --head" in command
    assert f"--port={RAY_PORT}" in command
    assert "--dashboard-host=0.0.0.0" in command and "--num-gpus=0" in command
    assert "--block" in command
    assert "ray status" in healthcheck_text(head)
    assert f":{RAY_PORT}" in healthcheck_text(head)
    for name, service in services(compose).items():
        text = yaml.safe_dump(service)
        assert "6379" not in text, f"{name} mentions port 6379"


def test_gpu_worker_joins_the_head_with_an_nvidia_reservation(compose):
    worker = services(compose)["ray-gpu-worker"]
    command = command_text(worker)
    assert f"ray start --address=ray-head:{RAY_PORT}" in command and "--block" in command
    assert depends_on(worker) == {"ray-head": "service_healthy"}
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device["driver"] == "nvidia"
        and "gpu" in device["capabilities"]
        and (device.get("count") in ("all", 1) or device.get("device_ids"))
        for device in devices
    )


def test_services_share_one_image_and_the_artifact_volume(compose):
    svc = services(compose)
    images = {svc[name]["image"] for name in SILO_IMAGE_SERVICES}
    assert len(images) == 1
    for name in SILO_IMAGE_SERVICES:
        assert svc[name]["build"]["context"] == "."
    artifact_root = environment(svc["api"])["SILO_ARTIFACT_ROOT"]
    for name in ARTIFACT_SERVICES:
        source = volume_targets(svc[name]).get(artifact_root)
        assert source in compose["volumes"], f"{name} lacks the artifact volume at {artifact_root}"
    sources = {volume_targets(svc[name])[artifact_root] for name in ARTIFACT_SERVICES}
    assert len(sources) == 1


def test_service_settings_come_from_one_anchor(compose):
    shared = compose["x-silo-env"]
    assert shared["SILO_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in shared["SILO_DATABASE_URL"]
    assert shared["SILO_RAY_ADDRESS"] == f"ray-head:{RAY_PORT}"
    assert shared["SILO_API_URL"] == "http://api:8000"
    for key in ("SILO_ARTIFACT_ROOT", "SILO_DATA_DIR"):
        assert shared[key].startswith("/")
    for name in ("migrate", "api", "dispatcher"):
        env = environment(services(compose)[name])
        assert {key: env[key] for key in shared} == shared, name


def test_every_silo_variable_is_a_setting(compose):
    allowed = allowed_silo_variables()
    # The names that exist today, so a renamed field is noticed here.
    assert {"SILO_DATABASE_URL", "SILO_ARTIFACT_ROOT", "SILO_DATA_DIR"} <= allowed
    used = set(compose["x-silo-env"])
    for service in services(compose).values():
        used |= {key for key in environment(service) if key.startswith("SILO_")}
        # What the container reads ($$NAME), not what Compose fills in (${NAME:-default}).
        command = re.sub(r"(?<!\$)\$\{[A-Z0-9_]+(:?-[^}]*)?\}", "", command_text(service))
        used |= set(re.findall(r"\bSILO_[A-Z0-9_]+", command))
    assert used, "no SILO_ variable found"
    assert used <= allowed, f"not settings: {sorted(used - allowed)}"


def test_ray_workers_get_no_database_credentials(compose):
    for name in ("ray-head", "ray-gpu-worker"):
        env = environment(services(compose)[name])
        assert not any(key.startswith("SILO_DATABASE") for key in env), name
        assert not any("postgresql" in value for value in env.values()), name


def test_compose_variables_are_documented():
    text = COMPOSE_FILE.read_text()
    doc = DEPLOY_DOC.read_text()
    # ${NAME...} is read by Compose; $${NAME} is left to the container's shell.
    variables = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    assert variables
    missing = sorted(name for name in variables if f"`{name}`" not in doc)
    assert not missing, f"docs/deploy.md does not explain {missing}"


def test_deploy_doc_covers_the_essentials():
    doc = DEPLOY_DOC.read_text()
    for phrase in (
        "docker compose up -d",
        "silo token create --user",
        "--admin",
        "ray start --address=<head-host>:6380",
        "silo db upgrade",
        "pg_dump",
        "6379",
        "SILO_API_URL",
        "SILO_RAY_ADDRESS",
    ):
        assert phrase in doc, phrase


def doc_compose_overrides() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", DEPLOY_DOC.read_text(), flags=re.S)
    return [block for block in blocks if block.startswith("services:")]


def test_deploy_doc_overrides_parse_and_name_existing_services(compose):
    overrides = doc_compose_overrides()
    assert overrides
    for block in overrides:
        override = yaml.safe_load(block)
        assert set(override["services"]) <= set(services(compose))
        for service in override["services"].values():
            assert not ("network_mode" in service and "ports" in service)


def test_dockerfile_installs_the_project_on_python_311_slim():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, flags=re.M)
    # Every part of the project: the base install is the client alone.
    assert re.search(r"^RUN pip install '\.\[all\]'", text, flags=re.M)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignored and "!pyproject.toml" in ignored
    # Every package pyproject.toml installs reaches the image (the server imports
    # silo_client's models, so an image without it cannot start).
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in text, package
        assert f"!{package}/" in ignored, package


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    return None


def run_config(command: list[str], *files: Path) -> subprocess.CompletedProcess:
    args = [*command]
    for file in files:
        args += ["-f", str(file)]
    env = {**os.environ, "SILO_HEAD_IP": "192.0.2.10"}
    return subprocess.run(
        [*args, "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_config_accepts_the_files(tmp_path):
    command = compose_command()
    if command is None:
        pytest.skip(
            "no docker-compose or `docker compose` executable: `config` not checked "
            "(scripts/ensure-test-tools installs Debian's docker-compose)"
        )
    done = run_config(command, COMPOSE_FILE)
    assert done.returncode == 0, done.stderr
    for index, block in enumerate(doc_compose_overrides()):
        override = tmp_path / f"override-{index}.yml"
        override.write_text(block)
        done = run_config(command, COMPOSE_FILE, override)
        assert done.returncode == 0, f"docs/deploy.md override {index}: {done.stderr}"

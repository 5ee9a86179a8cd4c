"""Deployment files are accepted by the tools that consume them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_service_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's installed entry point.
    entry_point = PROJECT_ROOT / ".venv" / "bin" / "trading-bot"
    if not entry_point.exists():
        pytest.skip("the project is not installed in .venv")
    unit = (PROJECT_ROOT / "trading-bot.service").read_text()
    assert "/opt/trading-bot/.venv/bin/trading-bot" in unit
    target = tmp_path / "trading-bot.service"
    target.write_text(unit.replace("/opt/trading-bot/.venv/bin/trading-bot", str(entry_point)))
    result = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "trading-bot.service" not in result.stderr, result.stderr  # no warnings about our unit


def test_service_file_has_the_operational_settings() -> None:
    unit = (PROJECT_ROOT / "trading-bot.service").read_text()
    for setting in ("Restart=always", "User=trading-bot", "EnvironmentFile=", "WatchdogSec=", "Type=notify",
                    "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert setting in unit


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(_compose_command() is None, reason="neither docker compose nor docker-compose is installed")
def test_compose_file_is_accepted_by_docker_compose_config() -> None:
    command = _compose_command()
    assert command is not None
    for extra in ([], ["--profile", "postgres"]):
        result = subprocess.run([*command, "-f", str(PROJECT_ROOT / "docker-compose.yml"), *extra, "config", "-q"],
                                capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
        assert result.returncode == 0, result.stderr


def test_compose_and_dockerfile_shape() -> None:
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"bot", "postgres"}
    assert compose["services"]["postgres"]["profiles"] == ["postgres"]
    assert any(v.endswith(":/app/data") for v in compose["services"]["bot"]["volumes"])
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "USER trading-bot" in dockerfile and "HEALTHCHECK" in dockerfile and "/health" in dockerfile

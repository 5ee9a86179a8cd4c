"""The `trading-bot` command line: help, routing, and the worker's clean start and stop."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.cli import SUBCOMMANDS, _not_available

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINGX_", "TELEGRAM_", "DISCORD_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return env


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=60)


def test_top_level_help_lists_every_subcommand(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for sub in SUBCOMMANDS:
        assert sub.name in result.stdout


@pytest.mark.parametrize("name", [sub.name for sub in SUBCOMMANDS])
def test_each_subcommand_has_help(tmp_path: Path, name: str) -> None:
    result = run_cli(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: trading-bot " + name in result.stdout


def test_an_unfinished_subcommand_says_so_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    handler = _not_available("teleport")
    assert handler(argparse.Namespace()) == 2
    assert capsys.readouterr().err.strip() == "trading-bot teleport: not available yet"


def test_every_subcommand_is_available() -> None:
    assert [sub.name for sub in SUBCOMMANDS if sub.module is None] == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_starts_in_paper_mode_on_sqlite_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "config.yaml").write_text("health:\n  port: 0\n")  # defaults otherwise; a free port
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log_file = tmp_path / "logs" / "trading-bot.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if log_file.exists() and "trading-bot started" in log_file.read_text():
                break
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.1)
        else:
            pytest.fail("the worker did not log its start within 60 s")
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert (tmp_path / "data" / "trading-bot.db").is_file()
    assert "PAPER mode" in stderr
    assert "stopped cleanly" in log_file.read_text()

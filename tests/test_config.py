"""Configuration loading: env substitution, strict validation, secrets never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import AppConfig, ConfigError, TradingMode, load_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-live-9f8e7d6c5b4a39281706"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


def test_shipped_config_yaml_loads_with_paper_defaults() -> None:
    config = load_config(PROJECT_ROOT / "config.yaml", env={})
    assert config.mode is TradingMode.PAPER
    assert config.database.url == "sqlite://data/trading-bot.db"
    assert config.exchange.rest_url is None
    assert config.alerts.entry == "on" and config.alerts.stop_moved == "silent"
    assert config.strategies.multi_timeframe_long.rsi_min == 57
    assert config.strategies.trend_distance_short.target_atr == 15


def test_shipped_config_documents_every_key_with_a_comment() -> None:
    lines = (PROJECT_ROOT / "config.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ")):
            continue
        commented_above = index > 0 and lines[index - 1].strip().startswith("#")
        assert "#" in line or commented_above, f"config.yaml key without a comment: {line!r}"


def test_missing_default_config_uses_the_shipped_file_with_its_environment_mappings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}) == AppConfig()  # the shipped file holds exactly the embedded defaults
    config = load_config(env={"TRADING_MODE": "live", "BINGX_API_KEY": "k" * 8, "BINGX_API_SECRET": "s" * 8,
                              "BINGX_REST_URL": "http://127.0.0.1:8080"})
    assert config.mode is TradingMode.LIVE and config.exchange.rest_url == "http://127.0.0.1:8080"
    assert load_config(None, env={"TRADING_MODE": "live"}) == AppConfig()  # None: embedded defaults only


def test_an_explicit_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_env_substitution_with_defaults_and_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BINGX_API_KEY=from-dotenv-key\nLEVEL=DEBUG\n")
    path = write(
        tmp_path,
        "exchange:\n  api_key: ${BINGX_API_KEY}\n  recv_window_ms: ${RECV:-3000}\n"
        "logging:\n  level: ${LEVEL:-INFO}\n",
    )
    config = load_config(path)
    assert config.exchange.api_key.get_secret_value() == "from-dotenv-key"
    assert config.exchange.recv_window_ms == 3000
    assert config.logging.level == "DEBUG"


def test_real_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("LEVEL=DEBUG\n")
    monkeypatch.setenv("LEVEL", "ERROR")
    config = load_config(write(tmp_path, "logging:\n  level: ${LEVEL:-INFO}\n"))
    assert config.logging.level == "ERROR"


def test_required_env_var_missing_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"exchange\.api_key: environment variable NOPE_NOT_SET is not set"):
        load_config(write(tmp_path, "exchange:\n  api_key: ${NOPE_NOT_SET}\n"), env={})


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("risk:\n  max_drawdown_pct: -5\n", r"risk\.max_drawdown_pct: .*greater than 0.*-5"),
        ("risk:\n  max_drawdon_pct: 5\n", r"risk\.max_drawdon_pct: unknown key"),
        ("colour: blue\n", r"colour: unknown key"),
        ("mode: yolo\n", r"mode: .*'paper' or 'live'.*yolo"),
        ("exchange:\n  recv_window_ms: fast\n", r"exchange\.recv_window_ms: .*integer.*fast"),
        ("symbols: [btcusdt]\n", r"symbols: .*BTC-USDT"),
        ("strategies:\n  trend_distance_short:\n    rsi_min: 60\n    rsi_max: 50\n", r"rsi_min 60.0 is above rsi_max"),
        ("alerts:\n  entry: loud\n", r"alerts\.entry: .*'on', 'silent' or 'off'"),
        ("- just\n- a list\n", r"top level must be a mapping"),
        ("mode: [unclosed\n", r"not valid YAML"),
    ],
)
def test_bad_values_are_rejected_with_the_key_path(tmp_path: Path, yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, yaml_text), env={})


def test_live_mode_requires_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode is live but exchange.api_key"):
        load_config(write(tmp_path, "mode: live\n"), env={})


def test_secret_values_never_appear_in_errors_or_reprs(tmp_path: Path) -> None:
    path = write(tmp_path, f"exchange:\n  api_key: {SECRET}\n  api_secret: [{SECRET}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "exchange.api_secret" in str(caught.value)
    assert SECRET not in str(caught.value)

    config = load_config(write(tmp_path, f"exchange:\n  api_key: {SECRET}\n  api_secret: {SECRET}x\n"), env={})
    assert SECRET not in repr(config) and SECRET not in str(config.masked_dict())
    assert config.masked_dict()["exchange"]["api_key"] == "***"
    assert set(config.secret_values()) == {SECRET, SECRET + "x"}


def test_cli_exits_2_naming_the_unknown_key(tmp_path: Path) -> None:
    write(tmp_path, "risk:\n  max_drawdown_pct: 10\n  surprise: 1\n")
    result = run_cli("run", "--config", "config.yaml", cwd=tmp_path, env={"PYTHONPATH": str(PROJECT_ROOT)})
    assert result.returncode == 2
    assert "risk.surprise: unknown key" in result.stderr


def test_cli_exits_2_on_negative_drawdown(tmp_path: Path) -> None:
    write(tmp_path, "risk:\n  max_drawdown_pct: -5\n")
    result = run_cli("run", "--config", "config.yaml", cwd=tmp_path, env={"PYTHONPATH": str(PROJECT_ROOT)})
    assert result.returncode == 2
    assert "risk.max_drawdown_pct" in result.stderr and "-5" in result.stderr
    assert not (tmp_path / "data").exists(), "nothing may be created before the config is valid"

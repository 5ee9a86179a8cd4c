"""No secret reaches a log line, whatever code logs it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bot.config import load_config
from bot.logging_setup import secrets, setup_logging, stop_logging

API_KEY = "ak0123456789abcdefKEY"
API_SECRET = "zzSECRETzz9f8e7d6c5b4a3928"
TG_TOKEN = "7123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"
WEBHOOK = "https://discord.com/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
UNREGISTERED_TG_TOKEN = "5550001111:ZZHdqTcvCH1vGWJxfSeofSAs0K5PALDsQQQ"


@pytest.fixture(autouse=True)
def _clean_registry() -> None:
    secrets.clear()
    yield
    secrets.clear()
    logging.getLogger().handlers.clear()


def test_no_secret_in_console_or_file_after_logging_config_and_exception(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        "exchange:\n  api_key: ${K}\n  api_secret: ${S}\n"
        "telegram:\n  token: ${T}\n"
        "discord:\n  webhook_url: ${W}\n",
    )
    config = load_config(config_path, env={"K": API_KEY, "S": API_SECRET, "T": TG_TOKEN, "W": WEBHOOK})
    log_file = tmp_path / "logs" / "bot.jsonl"
    setup_logging(level="DEBUG", file=log_file, json_lines=True, secret_values=config.secret_values())

    log = logging.getLogger("careless.code")
    log.info("config: %s", config)  # SecretStr hides these already
    log.info("raw dump %s", {"key": config.exchange.api_key.get_secret_value(),
                             "secret": config.exchange.api_secret.get_secret_value()})
    log.warning("posting to %s", WEBHOOK, extra={"symbol": "BTC-USDT"})
    logging.getLogger("httpx").warning("HTTP Request: POST https://api.telegram.org/bot%s/getUpdates", TG_TOKEN)
    logging.getLogger("someone.else").warning("token %s", UNREGISTERED_TG_TOKEN)
    logging.getLogger("rest").info("GET /openApi/swap/v2/trade/openOrders?timestamp=1&signature=%s", "ab" * 32)
    try:
        raise RuntimeError(f"auth failed for key={API_KEY} secret={API_SECRET}")
    except RuntimeError:
        log.exception("request failed")

    stop_logging()  # the handlers write on the listener thread: flush it before reading
    console = capsys.readouterr().err
    file_text = log_file.read_text()
    for output in (console, file_text):
        for secret in (API_KEY, API_SECRET, TG_TOKEN, WEBHOOK, "123456789012345678/AbCdEf", UNREGISTERED_TG_TOKEN,
                       "ab" * 32):
            assert secret not in output
        assert "***" in output
        assert "request failed" in output and "RuntimeError" in output  # the record itself is kept

    records = [json.loads(line) for line in file_text.splitlines()]
    assert {r["logger"] for r in records} >= {"careless.code", "httpx", "rest"}
    warning = next(r for r in records if r["message"].startswith("posting to"))
    assert warning["symbol"] == "BTC-USDT" and warning["level"] == "WARNING" and "time" in warning
    assert "exception" in records[-1]


def test_file_rotates_by_size(tmp_path: Path) -> None:
    log_file = tmp_path / "bot.jsonl"
    setup_logging(level="INFO", file=log_file, max_mb=0.01, backups=2, console=False)
    for i in range(400):
        logging.getLogger("spam").info("line %d %s", i, "x" * 100)
    stop_logging()
    rotated = sorted(p.name for p in tmp_path.iterdir())
    assert rotated == ["bot.jsonl", "bot.jsonl.1", "bot.jsonl.2"]
    assert log_file.stat().st_size <= 0.01 * 1024 * 1024 + 400


@pytest.mark.parametrize("url", ["postgres://trading_bot:s3cr3t-PW@db:5432/bot", "mysql://u:p%40ss@127.0.0.1/x",
                                 "https://user:hunter22@example.org/path"])
def test_credentials_in_a_url_are_hidden_even_when_nobody_registered_them(url: str) -> None:
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    text = secrets.redact(f"OSError: could not connect to {url} (timeout)")
    assert password not in text and "(timeout)" in text


def test_a_url_without_credentials_is_left_alone() -> None:
    text = "GET http://127.0.0.1:8787/health and sqlite://data/trading-bot.db"
    assert secrets.redact(text) == text

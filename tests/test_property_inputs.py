"""Bad input, property-based: hostile config files and chat messages.

* Any YAML text as ``config.yaml``: ``load_config`` returns a config or raises ``ConfigError``
  with a message, never another exception.
* Any chat text from any caller: the dispatcher answers (or stays silent for strangers) without
  raising; a caller who is not an admin never causes a control action (nothing is written).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import AppConfig, ConfigError, load_config
from commands import build_dispatcher, parse_command_text
from commands.model import Caller
from tests.chatops_fixtures import ADMIN, CHAT, STRANGER, USER, make_config
from tests.fakes_trading import FakeTrading

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

KEYS = ["mode", "symbols", "exchange", "database", "url", "api_key", "api_secret", "rest_url", "strategies", "leverage",
        "risk_pct", "telegram", "token", "chat_id", "authorized_users", "logging", "level", "health", "port", "paper",
        "starting_balance", "alerts", "approval", "timeout_s", "emergency", "x"]
leaves = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True), st.text(max_size=15),
                   st.sampled_from(["live", "paper", "${NOPE}", "${BINGX_API_KEY}", "sqlite://", "-1", "1e999", "BTC-USDT"]))
trees = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)), max_leaves=15)
yaml_texts = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), trees, max_size=6).map(lambda d: yaml.safe_dump(d)),
    st.text(max_size=120),
    st.sampled_from(["mode: [", "a: b: c", "!!python/object:os.system ls", "- 1\n- 2", "\x00", "mode: live\nexchange: 5",
                     "symbols: {a: 1}", "&a [*a]", "? [1]\n: 2"]),
)


@SETTINGS
@given(yaml_texts)
def test_any_config_file_loads_or_raises_config_error(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path: Path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else path.write_bytes(b"\xff\xfe")
    try:
        config = load_config(path, env={})
    except ConfigError as exc:
        assert str(exc).strip()
    else:
        assert isinstance(config, AppConfig)


COMMANDS = ["status", "positions", "trades", "pnl", "close", "pause", "resume", "stop", "approval", "unlock", "help", "whoami",
            "balance", "orders", "risk", "x", ""]
messages = st.one_of(
    st.text(max_size=80).map(lambda t: "/" + t),
    st.tuples(st.sampled_from(COMMANDS), st.lists(st.one_of(st.text(max_size=20), st.sampled_from(
        ["all", "7", "-1", "99999999999999999999", "0", "on", "off", "ON", "NaN", "1e9", '"', "@bot", "BTC-USDT"])), max_size=4))
    .map(lambda t: "/" + t[0] + " " + " ".join(t[1])),
)


@pytest.mark.usefixtures("db_url")
@SETTINGS
@given(messages, st.sampled_from([ADMIN, USER, STRANGER]), st.booleans())
async def test_any_chat_message_is_answered_and_non_admins_change_nothing(text: str, user: int, private: bool) -> None:
    trading = FakeTrading()
    dispatcher = build_dispatcher(make_config(), trading, trading)
    parsed = parse_command_text(text)
    if parsed is None:
        return
    name, args = parsed
    reply = await dispatcher.dispatch(Caller("telegram", user, CHAT, f"u{user}", private=private), name, args)
    if user == STRANGER:
        assert reply is None
    if user != ADMIN:
        assert trading.calls == [], (text, trading.calls)
    if reply is not None:
        assert reply.title or reply.text

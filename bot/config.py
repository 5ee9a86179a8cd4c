"""Configuration: one YAML file, environment substitution, strict validation.

``config.yaml`` is the single documented place for every setting. Values may reference
the environment as ``${VAR}`` (required) or ``${VAR:-default}``; an optional ``.env``
file next to the config fills variables that the real environment does not set.

Validation is strict: an unknown key, a wrong type or an out-of-range value raises
:class:`ConfigError` whose message names the key path and the offending value (secrets
are masked). The CLI turns that into exit code 2.
"""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping
from urllib.parse import unquote

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from strategies.params import StrategiesConfig

if TYPE_CHECKING:
    from engine.exchange.bingx import BingxRestClient

DEFAULT_CONFIG_PATH = Path("config.yaml")
# The documented config.yaml shipped with the project: its ${VAR} mappings make the environment work
# even when the working directory has no config.yaml of its own.
SHIPPED_CONFIG_PATH = Path(__file__).resolve().parents[1] / "config.yaml"
DEFAULT_DATABASE_URL = "sqlite://data/trading-bot.db"

# Keys whose values are secrets: masked in every error message and in `doctor`/`/config` output.
SECRET_FIELD_NAMES = frozenset({"api_key", "api_secret", "token", "webhook_url"})

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{1,20}-[A-Z]{2,10}$")
# The password of a database URL: "scheme://user:PASSWORD@host" (rightmost "@": a raw "@" in it still
# counts), and a "password=" query parameter (asyncpg accepts both).
_URL_USERINFO_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*:)(?P<password>.*)(?=@[^@]*$)")
_URL_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&#]*)", re.IGNORECASE)


def database_url_passwords(url: str) -> list[str]:
    """The password(s) written in a database URL, as written and percent-decoded (empty: none)."""
    found = [m.group("password") for m in (_URL_USERINFO_PASSWORD.match(url.split("?", 1)[0]),) if m]
    found += [m.group("password") for m in _URL_QUERY_PASSWORD.finditer(url)]
    found = [p for p in found if p]
    return list(dict.fromkeys([*found, *(unquote(p) for p in found)]))


def mask_database_url(url: str) -> str:
    """``url`` with its password shown as ``***`` (user, host, port and database stay readable)."""
    base, sep, query = url.partition("?")
    base = _URL_USERINFO_PASSWORD.sub(lambda m: m.group("head") + "***" if m.group("password") else m.group(0), base)
    query = _URL_QUERY_PASSWORD.sub(lambda m: m.group("head") + "***", sep + query)
    return base + query


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class _Strict(BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TradingMode(str, Enum):
    """Paper trades against the live feed with a simulated wallet; live sends real orders."""

    PAPER = "paper"
    LIVE = "live"


class ExchangeConfig(_Strict):
    """BingX connection settings."""

    testnet: bool = False
    rest_url: str | None = None
    ws_url: str | None = None
    api_key: SecretStr = SecretStr("")
    api_secret: SecretStr = SecretStr("")
    recv_window_ms: Annotated[int, Field(ge=100, le=60_000)] = 5000
    request_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0

    @field_validator("rest_url", "ws_url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.match(r"^(https?|wss?)://", value):
            raise ValueError("must start with http://, https://, ws:// or wss://")
        return value.rstrip("/")

    def rest_client(self, **options: Any) -> BingxRestClient:
        """A REST client for this section (host chosen for testnet / a custom URL); ``options`` go to the client."""
        from engine.exchange.bingx import BingxRestClient, resolve_urls

        rest_url, _ = resolve_urls(self.testnet, self.rest_url, self.ws_url)
        return BingxRestClient(rest_url=rest_url, api_key=self.api_key.get_secret_value(),
                               api_secret=self.api_secret.get_secret_value(), recv_window_ms=self.recv_window_ms,
                               request_timeout_s=self.request_timeout_s, **options)


class RiskConfig(_Strict):
    """Portfolio-level limits and protections (the risk manager enforces them)."""

    max_portfolio_risk_pct: Annotated[float, Field(gt=0, le=100)] = 6.0
    max_open_positions: Annotated[int, Field(ge=1, le=100)] = 4
    max_notional_usdt: Annotated[float, Field(gt=0)] = 50_000.0
    max_leverage: Annotated[int, Field(ge=1, le=125)] = 5
    min_free_margin_pct: Annotated[float, Field(ge=0, le=100)] = 10.0
    max_orders_per_minute: Annotated[int, Field(ge=1, le=600)] = 20
    cooldown_after_loss_min: Annotated[float, Field(ge=0)] = 15.0
    max_consecutive_losses: Annotated[int, Field(ge=1)] = 3
    consecutive_loss_pause_min: Annotated[float, Field(ge=0)] = 240.0
    daily_loss_limit_pct: Annotated[float, Field(gt=0, le=100)] = 3.0
    max_drawdown_pct: Annotated[float, Field(gt=0, le=100)] = 10.0
    close_positions_on_kill_switch: bool = False
    api_error_threshold: Annotated[int, Field(ge=1)] = 10
    api_error_window_min: Annotated[float, Field(gt=0)] = 5.0
    max_price_deviation_pct: Annotated[float, Field(gt=0, le=100)] = 5.0


class PaperConfig(_Strict):
    """The simulated wallet used in paper mode."""

    starting_balance: Annotated[float, Field(gt=0)] = 10_000.0
    slippage_bps: Annotated[float, Field(ge=0, le=1000)] = 2.0


class DatabaseConfig(_Strict):
    """Where the bot remembers orders, trades and state across restarts."""

    url: str = DEFAULT_DATABASE_URL

    def __repr_args__(self) -> Any:
        # repr() / str() of the config (tracebacks, debug logs) must not show the password.
        yield "url", mask_database_url(self.url)

    def passwords(self) -> list[str]:
        """The URL's password (as written and percent-decoded), for log redaction."""
        return database_url_passwords(self.url)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not re.match(r"^(sqlite|postgres|postgresql|asyncpg|psycopg)://", value):
            raise ValueError("must be sqlite://PATH or postgres://USER@HOST:PORT/DB")
        return value


class TelegramConfig(_Strict):
    """Telegram bot (python-telegram-bot). Users and chats are numeric ids."""

    enabled: bool = False
    token: SecretStr = SecretStr("")
    api_url: str = "https://api.telegram.org"
    chat_id: int | None = None
    error_chat_id: int | None = None
    authorized_users: list[int] = Field(default_factory=list)
    admin_users: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs_token(self) -> "TelegramConfig":
        if self.enabled and not self.token.get_secret_value():
            raise ValueError("telegram.enabled is true but telegram.token is empty")
        return self


class DiscordConfig(_Strict):
    """Discord bot (discord.py) or, with only ``webhook_url``, alerts through a webhook."""

    enabled: bool = False
    token: SecretStr = SecretStr("")
    channel_id: int | None = None
    error_channel_id: int | None = None
    webhook_url: SecretStr = SecretStr("")
    authorized_users: list[int] = Field(default_factory=list)
    admin_users: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs_token(self) -> "DiscordConfig":
        # Without a token the bot never connects: its channel would get a route but no sender, and
        # alerts would pile up pending forever. Webhook-only alerts need enabled: false.
        if self.enabled and not self.token.get_secret_value():
            raise ValueError("discord.enabled is true but discord.token is empty "
                             "(for alerts through discord.webhook_url alone, set discord.enabled to false)")
        return self


class ApprovalConfig(_Strict):
    """Optional human approval of every entry from chat."""

    enabled: bool = False
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 120.0
    max_slippage_pct: Annotated[float, Field(ge=0, le=50)] = 0.5


AlertLevel = Literal["on", "silent", "off"]

# Why approval mode cannot run with alerts.approval off (config error and the /approval refusal).
APPROVAL_ALERTS_OFF = ("alerts.approval is off, so approval requests would be posted nowhere and every entry "
                       "would expire unapproved: set alerts.approval to on or silent")


class AlertsConfig(_Strict):
    """Per event type: ``on`` (notify), ``silent`` (deliver without sound), ``off``."""

    entry: AlertLevel = "on"
    exit: AlertLevel = "on"
    partial_exit: AlertLevel = "on"
    stop_moved: AlertLevel = "silent"
    risk_rejection: AlertLevel = "on"
    protection: AlertLevel = "on"
    halt: AlertLevel = "on"
    reconnect: AlertLevel = "silent"
    error: AlertLevel = "on"
    hourly_status: AlertLevel = "silent"
    daily_summary: AlertLevel = "on"
    # Approval requests (approval mode): posted by the approval notifiers, not through the publisher.
    # ``silent`` posts them without sound; ``off`` is refused together with approval mode (see
    # AppConfig._approval_requests_visible), since an unseen request could only ever expire.
    approval: AlertLevel = "on"
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 50
    dedup_window_s: Annotated[float, Field(ge=0)] = 300.0

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, data: Any) -> Any:
        # YAML 1.1 reads unquoted on/off as true/false: accept what the user wrote.
        if isinstance(data, dict):
            return {k: ("on" if v is True else "off" if v is False else v) for k, v in data.items()}
        return data

    def level(self, event_type: str) -> AlertLevel:
        """The configured level of an event type (unknown types are ``on``: never drop silently)."""
        value = getattr(self, event_type, "on")
        return value if value in ("on", "silent", "off") else "on"


class LoggingConfig(_Strict):
    """Console plus size-rotated JSON-lines file."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str | None = "logs/trading-bot.jsonl"
    # Stored as `json_lines` because `json` shadows a pydantic method; the YAML key is `json`.
    json_lines: bool = Field(default=True, alias="json")
    max_mb: Annotated[float, Field(gt=0, le=10_000)] = 20.0
    backups: Annotated[int, Field(ge=0, le=1000)] = 5


class EmergencyConfig(_Strict):
    """Emergency stop: creating this file pauses entries within a second."""

    stop_file: str = "STOP"


class ShutdownConfig(_Strict):
    """What SIGTERM/SIGINT does with open positions."""

    close_positions: bool = False
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class ReconciliationConfig(_Strict):
    """Comparing the exchange with the database."""

    interval_min: Annotated[float, Field(gt=0, le=1440)] = 5.0
    cancel_unknown_orders: bool = False
    manage_manual_positions: bool = False
    # Wallet-balance change between two reconciliations that the DB (fills, fees, funding) and
    # noted deposits/withdrawals may leave unexplained; beyond it a rise alerts, a drop halts entries.
    balance_tolerance_usdt: Annotated[float, Field(ge=0, le=1_000_000)] = 1.0


class HealthConfig(_Strict):
    """The local HTTP health endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8787
    stale_feed_s: Annotated[float, Field(gt=0)] = 120.0


class AppConfig(_Strict):
    """The whole validated configuration."""

    mode: TradingMode = TradingMode.PAPER
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig)
    symbols: list[str] = Field(default_factory=lambda: ["BTC-USDT"], min_length=1)
    strategies: StrategiesConfig = Field(default_factory=StrategiesConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    paper: PaperConfig = Field(default_factory=PaperConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    discord: DiscordConfig = Field(default_factory=DiscordConfig)
    approval: ApprovalConfig = Field(default_factory=ApprovalConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    emergency: EmergencyConfig = Field(default_factory=EmergencyConfig)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)
    reconciliation: ReconciliationConfig = Field(default_factory=ReconciliationConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)

    @field_validator("symbols")
    @classmethod
    def _symbol_format(cls, symbols: list[str]) -> list[str]:
        for symbol in symbols:
            if not _SYMBOL_PATTERN.match(symbol):
                raise ValueError(f"{symbol!r} is not a BingX symbol like BTC-USDT (upper case, with a hyphen)")
        if len(set(symbols)) != len(symbols):
            raise ValueError("symbols must not repeat")
        return symbols

    @model_validator(mode="after")
    def _live_needs_keys(self) -> "AppConfig":
        if self.mode is TradingMode.LIVE and not (
            self.exchange.api_key.get_secret_value() and self.exchange.api_secret.get_secret_value()
        ):
            raise ValueError("mode is live but exchange.api_key / exchange.api_secret are empty")
        return self

    @model_validator(mode="after")
    def _capped_entries_keep_free_margin(self) -> "AppConfig":
        # sizing leaves margin_reserve_pct of the leverage cap free; below the gate's minimum, every
        # entry the cap sizes would be refused by the free-margin rule (paper/live), unlike the backtest
        reserve, minimum = self.strategies.margin_reserve_pct, self.risk.min_free_margin_pct
        if reserve < minimum:
            raise ValueError(
                f"strategies.margin_reserve_pct ({reserve:g}) is below risk.min_free_margin_pct ({minimum:g}): "
                "every entry capped by leverage would leave too little free margin and be refused by the risk gate; "
                "set strategies.margin_reserve_pct >= risk.min_free_margin_pct"
            )
        return self

    @model_validator(mode="after")
    def _approval_requests_visible(self) -> "AppConfig":
        if self.approval.enabled and self.alerts.approval == "off":
            raise ValueError(f"approval.enabled is true but {APPROVAL_ALERTS_OFF} (or approval.enabled to false)")
        return self

    def secret_values(self) -> list[str]:
        """Every non-empty secret in this config (registered with the log redaction filter)."""
        values: list[str] = []

        def walk(model: BaseModel) -> None:
            for name in type(model).model_fields:
                value = getattr(model, name)
                if isinstance(value, SecretStr) and value.get_secret_value():
                    values.append(value.get_secret_value())
                elif isinstance(value, BaseModel):
                    walk(value)

        walk(self)
        values.extend(self.database.passwords())  # a plain URL string, but its password is a secret
        return values

    def masked_dict(self) -> dict[str, Any]:
        """The config as plain data with secrets shown as ``***`` (for `doctor` and `/config`)."""
        data = _mask(self.model_dump(mode="python"))
        data["database"]["url"] = mask_database_url(self.database.url)
        return data


def _mask(value: Any, key: str | None = None) -> Any:
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else ""
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    return value


def substitute_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree.

    Substitution runs on parsed scalars, not on the raw text, so a secret containing YAML
    syntax cannot change the document's structure.
    """
    if isinstance(value, dict):
        return {k: substitute_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set (use ${{{name}:-default}} for a default)")

    replaced = _ENV_PATTERN.sub(replace, value)
    # A whole-value substitution that yields "" means "unset": let the field default apply.
    return None if replaced == "" and _ENV_PATTERN.fullmatch(value) else replaced


def _drop_nones(value: Any) -> Any:
    """Remove keys whose value became None through substitution, so field defaults apply."""
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


def _mask_input(value: Any, key: str | None) -> Any:
    """A rejected value as shown in an error: secrets inside a section, a database URL's password, hidden."""
    if isinstance(value, dict):
        return {k: "***" if k in SECRET_FIELD_NAMES and v else _mask_input(v, k) for k, v in value.items()}
    if key == "url" and isinstance(value, str):
        return mask_database_url(value)  # a rejected URL may still carry the real password
    return value


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc) or "(top level)"
        is_secret = any(part in SECRET_FIELD_NAMES for part in loc)
        if error["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
            continue
        value = _mask_input(error.get("input"), loc[-1] if loc else None)
        shown = "***" if is_secret else repr(value)
        message = error["msg"]
        if is_secret:
            message = message.split(",")[0]
        if error["type"] in ("value_error", "assertion_error") and not loc:
            lines.append(f"config: {message.removeprefix('Value error, ')}")
        else:
            lines.append(f"{key}: {message.removeprefix('Value error, ')} (got {shown})")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_env_file(path: Path) -> dict[str, str]:
    """Read a ``.env`` file (missing file: empty). Real environment variables win."""
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_config(
    path: str | Path | None = DEFAULT_CONFIG_PATH,
    *,
    env: Mapping[str, str] | None = None,
    env_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AppConfig:
    """Load, substitute and validate the configuration.

    A missing default ``config.yaml`` falls back to the shipped one (same defaults, plus its
    ``${VAR}`` mappings), and without that to the embedded defaults: paper mode on SQLite.
    ``path=None`` means the embedded defaults. ``overrides`` is merged on top (tests, CLI).
    """
    raw: Any = {}
    config_path = Path(path) if path is not None else None
    # .env sits next to the config the user asked for (the working directory by default).
    env_dir = config_path.parent if config_path is not None else Path(".")
    if config_path == DEFAULT_CONFIG_PATH and not config_path.is_file():
        config_path = SHIPPED_CONFIG_PATH if SHIPPED_CONFIG_PATH.is_file() else None
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigError(f"config file not found: {config_path}")
        else:
            try:
                raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{config_path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: the top level must be a mapping of keys, got {type(raw).__name__}")

    if env is None:
        dotenv_path = Path(env_file) if env_file else env_dir / ".env"
        merged_env = {**load_env_file(dotenv_path), **os.environ}
    else:
        merged_env = dict(env)

    data = _drop_nones(substitute_env(raw, merged_env))
    if overrides:
        data = _deep_merge(data, dict(overrides))
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged

"""Telegram transport: python-telegram-bot running inside the bot's own asyncio loop.

- Commands and buttons are handed to the transport-neutral :class:`commands.Dispatcher`;
  strangers get no answer at all (the dispatcher audits them).
- The Application is started with ``initialize / start / updater.start_polling`` (not
  ``run_polling``), so it shares our event loop and never owns the process; updates sent while
  the bot was down are dropped on start (``drop_pending_updates=True``).
- ``telegram.api_url`` selects the Bot API server (self-hosted servers and test fakes work).
- Alerts go through :class:`TelegramAlertSender` (the outbox retries), approval requests through
  :class:`TelegramApprovalNotifier`. Rate limits: :class:`bot.telegram_ratelimit.TelegramRateLimiter`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from telegram import BotCommand, InputFile, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from alerts.senders import DeliveryError, OutgoingAlert
from bot.config import TelegramConfig
from bot.logging_setup import secrets as log_secrets
from bot.telegram_ratelimit import TelegramRateLimiter, retry_after_seconds
from bot.telegram_render import CAPTION_LIMIT, keyboard, render_chunks
from commands.model import Caller, Reply
from commands.registry import Dispatcher, parse_command_text

log = logging.getLogger(__name__)


def _safe(exc: BaseException) -> str:
    """An exception as text with every secret shape removed (PTB errors can carry URLs)."""
    return log_secrets.redact(f"{type(exc).__name__}: {exc}")[:250]


class TelegramAdapter:
    """Owns the PTB Application: polling, command and button handlers, and outgoing messages."""

    def __init__(
        self,
        config: TelegramConfig,
        dispatcher: Dispatcher,
        *,
        poll_timeout_s: float = 10.0,
        rate_limiter: TelegramRateLimiter | None = None,
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.poll_timeout_s = poll_timeout_s
        token = config.token.get_secret_value()
        if not token:
            raise ValueError("telegram.token is empty")
        log_secrets.register([token])
        api = config.api_url.rstrip("/")
        self.app: Application = (  # type: ignore[type-arg]
            ApplicationBuilder()
            .token(token)
            .base_url(f"{api}/bot")
            .base_file_url(f"{api}/file/bot")
            .rate_limiter(rate_limiter or TelegramRateLimiter())
            .concurrent_updates(True)  # a slow command (emergency stop) must not hold back the others
            .build()
        )
        self.app.add_handler(MessageHandler(filters.COMMAND, self._on_command))
        self.app.add_handler(CallbackQueryHandler(self._on_button))
        self.app.add_error_handler(self._on_error)
        self._started = False

    @property
    def bot(self) -> Any:
        """The PTB bot (for senders)."""
        return self.app.bot

    async def start(self) -> None:
        """Connect (getMe), publish the command menu, start long polling, dropping old updates."""
        await self.app.initialize()
        await self.app.start()
        try:
            await self.app.bot.set_my_commands([BotCommand(s.name, s.summary[:256]) for s in self.dispatcher.registry.all()])
        except TelegramError as exc:  # the menu is a convenience; commands work without it
            log.warning("could not set the Telegram command menu: %s", _safe(exc))
        assert self.app.updater is not None
        await self.app.updater.start_polling(
            drop_pending_updates=True,
            timeout=int(self.poll_timeout_s),
            allowed_updates=[Update.MESSAGE, Update.CALLBACK_QUERY],
        )
        self._started = True
        log.info("Telegram bot started", extra={"component": "telegram"})

    async def stop(self) -> None:
        """Stop polling and shut the Application down."""
        if not self._started:
            return
        self._started = False
        assert self.app.updater is not None
        if self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()
        log.info("Telegram bot stopped", extra={"component": "telegram"})

    # ---- incoming -------------------------------------------------------------------------

    @staticmethod
    def _caller(update: Update) -> Caller | None:
        user, chat = update.effective_user, update.effective_chat
        if user is None or chat is None:
            return None
        return Caller("telegram", user.id, chat.id, (user.username or user.full_name or "")[:64], private=chat.type == "private")

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        caller = self._caller(update)
        if message is None or caller is None or not message.text:
            return
        parsed = parse_command_text(message.text)
        if parsed is None:
            return
        reply = await self.dispatcher.dispatch(caller, *parsed)
        if reply is not None:
            await self.send_reply(caller.chat_id, reply)

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        caller = self._caller(update)
        if query is None or caller is None or query.data is None:
            return
        result = await self.dispatcher.press(caller, query.data)
        if result is None:
            return  # stranger: no answer at all
        await query.answer(result.toast[:200] or None)
        if result.reply is None:
            return
        message = query.message
        if result.replace and message is not None and getattr(message, "message_id", None):
            await self.edit_reply(message.chat.id, message.message_id, result.reply)
        else:
            await self.send_reply(caller.chat_id, result.reply)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("Telegram handler error: %s", _safe(context.error) if context.error else "unknown", extra={"component": "telegram"})

    # ---- outgoing -------------------------------------------------------------------------

    async def send_reply(self, chat_id: int, reply: Reply, *, silent: bool = False) -> list[int]:
        """Send a reply (split as needed; buttons on the last chunk); returns the message ids."""
        bot = self.app.bot
        chunks = render_chunks(reply)
        ids: list[int] = []
        if reply.image_path and Path(reply.image_path).is_file():
            caption = chunks[0] if len(chunks[0]) <= CAPTION_LIMIT and len(chunks) == 1 else None
            data = await asyncio.to_thread(Path(reply.image_path).read_bytes)  # no disk I/O on the loop
            photo = InputFile(data, filename=Path(reply.image_path).name)
            sent = await bot.send_photo(
                chat_id,
                photo,
                caption=caption,
                parse_mode=ParseMode.HTML if caption else None,
                disable_notification=silent,
                reply_markup=keyboard(reply) if caption else None,
            )
            ids.append(sent.message_id)
            if caption:
                return ids
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            sent = await bot.send_message(
                chat_id,
                chunk,
                parse_mode=ParseMode.HTML,
                disable_notification=silent,
                disable_web_page_preview=True,
                reply_markup=keyboard(reply) if last else None,
            )
            ids.append(sent.message_id)
        return ids

    async def edit_reply(self, chat_id: int, message_id: int, reply: Reply) -> None:
        """Replace a message's text and buttons (extra chunks are sent as new messages)."""
        chunks = render_chunks(reply)
        try:
            await self.app.bot.edit_message_text(
                chunks[0],
                chat_id=chat_id,
                message_id=message_id,
                parse_mode=ParseMode.HTML,
                disable_web_page_preview=True,
                reply_markup=keyboard(reply) if len(chunks) == 1 else None,
            )
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise
        if len(chunks) > 1:
            rest = Reply(title="", buttons=reply.buttons)
            for index, chunk in enumerate(chunks[1:], start=1):
                await self.app.bot.send_message(
                    chat_id, chunk, parse_mode=ParseMode.HTML, reply_markup=keyboard(rest) if index == len(chunks) - 1 else None
                )


class TelegramAlertSender:
    """Outbox destination: one Telegram chat (``telegram`` or ``telegram_errors``)."""

    def __init__(self, adapter: TelegramAdapter, chat_id: int, name: str = "telegram") -> None:
        self.adapter = adapter
        self.chat_id = chat_id
        self.name = name

    async def send(self, alert: OutgoingAlert) -> None:
        """Send the alert, mapping Telegram errors onto retry decisions."""
        try:
            await self.adapter.send_reply(self.chat_id, alert.reply, silent=alert.silent)
        except RetryAfter as exc:
            raise DeliveryError("Telegram flood control", retry_after=retry_after_seconds(exc)) from None
        except (BadRequest, Forbidden) as exc:
            # The chat is wrong or the bot was removed: retrying the same request cannot help.
            raise DeliveryError(_safe(exc), permanent=True) from None
        except TelegramError as exc:
            raise DeliveryError(_safe(exc)) from None


class TelegramApprovalNotifier:
    """Posts approval requests to the alert chat and edits them with the decision.

    ``silent`` (``alerts.approval: silent``) posts the requests without notification sound.
    """

    name = "telegram"

    def __init__(self, adapter: TelegramAdapter, chat_id: int, *, silent: bool = False) -> None:
        self.adapter = adapter
        self.chat_id = chat_id
        self.silent = silent

    async def post_request(self, reply: Reply) -> list[dict[str, Any]]:
        """Send the request with its buttons; returns where it is."""
        ids = await self.adapter.send_reply(self.chat_id, reply, silent=self.silent)
        return [{"chat_id": self.chat_id, "message_id": ids[-1]}]

    async def update_request(self, ref: dict[str, Any], reply: Reply) -> None:
        """Replace the request with the outcome (buttons removed)."""
        await self.adapter.edit_reply(int(ref["chat_id"]), int(ref["message_id"]), reply)

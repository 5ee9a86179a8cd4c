"""Discord transport: discord.py slash commands mapped onto the transport-neutral registry.

Every registry command becomes a slash command with one optional ``args`` text option; the
same :class:`commands.Dispatcher` decides who may do what, so authorization is identical to
Telegram's (strangers get no response at all, and are audited). Buttons (refresh, approval,
confirm) carry the registry's callback data as ``custom_id`` and are routed from
``on_interaction``, so they keep working across restarts. Alerts go to the configured channel
through :class:`DiscordChannelSender`; approval requests through :class:`DiscordApprovalNotifier`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import discord
from discord import app_commands

from alerts.senders import DeliveryError, OutgoingAlert
from bot.config import DiscordConfig
from bot.discord_render import make_view, render_embeds
from bot.logging_setup import secrets as log_secrets
from commands.auth import Role
from commands.model import ButtonResult, Caller, Reply
from commands.registry import CommandSpec, Dispatcher, split_args

log = logging.getLogger(__name__)

DEFER_AFTER_S = 2.0  # Discord wants a first response within 3 s
SYNC_RETRY_MAX_S = 60.0
BUTTON_PREFIXES = ("r:", "a:", "k:", "x:")


def interaction_caller(interaction: discord.Interaction) -> Caller:
    """The transport-neutral caller of an interaction (a DM has no guild)."""
    return Caller(
        "discord",
        interaction.user.id,
        interaction.channel_id or 0,
        str(interaction.user)[:64],
        private=interaction.guild_id is None,
    )


def _release(view: discord.ui.View | None) -> None:
    """Drop a sent view from discord.py's view store.

    Presses are routed by ``custom_id`` in :meth:`DiscordAdapter.on_interaction`, never through
    view callbacks; a stored view would only pile up in memory (one per message with buttons).
    """
    if view is not None:
        view.stop()


async def _send_reply(interaction: discord.Interaction, reply: Reply, *, ephemeral: bool = False) -> None:
    """Answer an interaction (first message as the response or follow-up, the rest as follow-ups)."""
    view = make_view(reply)
    try:
        await _send_messages(interaction, reply, view, ephemeral)
    finally:
        _release(view)


async def _send_messages(interaction: discord.Interaction, reply: Reply, view: discord.ui.View | None, ephemeral: bool) -> None:
    messages = render_embeds(reply)
    files = [discord.File(reply.image_path, filename="chart.png")] if reply.image_path and Path(reply.image_path).is_file() else []
    for index, embeds in enumerate(messages):
        last = index == len(messages) - 1
        kwargs: dict[str, Any] = {"embeds": embeds, "ephemeral": ephemeral}
        if last and view is not None:
            kwargs["view"] = view
        if index == 0 and files:
            kwargs["files"] = files
        if index == 0 and not interaction.response.is_done():
            await interaction.response.send_message(**kwargs)
        else:
            await interaction.followup.send(**kwargs)


class DiscordAdapter:
    """Owns the discord.py client and its command tree."""

    def __init__(self, config: DiscordConfig, dispatcher: Dispatcher, *, client: discord.Client | None = None) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.client = client or discord.Client(intents=discord.Intents.none())
        self.tree = app_commands.CommandTree(self.client)
        for spec in dispatcher.registry.all():
            self.tree.add_command(self._slash_command(spec))
        self.client.event(self.on_interaction)
        self._task: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        token = config.token.get_secret_value()
        if token:
            log_secrets.register([token])

    def _slash_command(self, spec: CommandSpec) -> app_commands.Command[Any, Any, Any]:
        dispatcher = self.dispatcher
        name = spec.name

        async def run(interaction: discord.Interaction, args: str | None) -> None:
            caller = interaction_caller(interaction)
            task = asyncio.ensure_future(dispatcher.dispatch(caller, name, split_args(args or "")))
            done, _ = await asyncio.wait({task}, timeout=DEFER_AFTER_S)
            if not done:  # slow control (emergency stop): acknowledge, answer when done
                await interaction.response.defer(thinking=True)
            reply = await task
            if reply is None:
                return  # stranger: no response at all
            await _send_reply(interaction, reply)

        async def with_args(interaction: discord.Interaction, args: str | None = None) -> None:
            await run(interaction, args)

        async def without_args(interaction: discord.Interaction) -> None:
            await run(interaction, None)

        description = (spec.summary + (" (admin)" if spec.admin else ""))[:100]
        command = app_commands.Command(name=name, description=description, callback=with_args if spec.usage else without_args)
        if spec.usage:
            command._params["args"].description = spec.usage[:100]  # shown as the option's hint
        return command

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Route button presses (component interactions) to the dispatcher.

        A press is acknowledged (deferred) at once, before the dispatcher runs: a confirmed
        emergency stop or an approval decision can take longer than the 3 s Discord gives the
        first response, and past it the token's response fails (10062) and the result is lost.
        The result then edits the button's message or arrives as a follow-up. A stranger's press
        is neither deferred nor answered (the role check is in memory).
        """
        if interaction.type is not discord.InteractionType.component:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        if not custom_id.startswith(BUTTON_PREFIXES):
            return
        caller = interaction_caller(interaction)
        if self.dispatcher.authorizer.role(caller) is not Role.STRANGER:
            try:
                await interaction.response.defer()  # a component's defer: "update the message later", nothing shown
            except discord.HTTPException as exc:  # e.g. 10062 (the press reached us too late): still act on it
                log.warning("could not acknowledge a Discord button press: HTTP %s", exc.status, extra={"component": "discord"})
        result = await self.dispatcher.press(caller, custom_id)
        if result is None:
            return  # stranger: ignored
        await self._answer_press(interaction, result)

    @staticmethod
    async def _answer_press(interaction: discord.Interaction, result: ButtonResult) -> None:
        """Deliver a press's result after the deferral: edit the button's message, or an ephemeral follow-up."""
        if result.reply is not None and result.replace:
            messages = render_embeds(result.reply)
            view = make_view(result.reply)
            try:
                if interaction.response.is_done():
                    await interaction.edit_original_response(embeds=messages[0], view=view)
                else:  # the deferral failed: answer directly (fails too if the token has expired)
                    await interaction.response.edit_message(embeds=messages[0], view=view)
            finally:
                _release(view)
            for embeds in messages[1:]:
                await interaction.followup.send(embeds=embeds)
            return
        if interaction.response.is_done():
            await interaction.followup.send(result.toast[:2000] or "OK", ephemeral=True)
        else:
            await interaction.response.send_message(result.toast[:2000] or "OK", ephemeral=True)
        if result.reply is not None:
            await _send_reply(interaction, result.reply)

    async def start(self) -> None:
        """Log in, connect to the gateway in the background, and sync the slash commands in the background.

        On a failure nothing is left behind (the caller retries with a fresh adapter): a client
        left connected would answer every command a second time.
        """
        try:
            await self.client.login(self.config.token.get_secret_value())
            self._task = asyncio.create_task(self._run_gateway(), name="discord-gateway")
        except BaseException:
            await self.stop()
            raise
        # A sync failure must not stop the bot: commands registered by an earlier sync keep working.
        self._sync_task = asyncio.create_task(self._sync_commands(), name="discord-command-sync")
        log.info("Discord bot started", extra={"component": "discord"})

    async def _run_gateway(self) -> None:
        """The gateway connection (discord.py reconnects by itself); says why when it gives up for good."""
        try:
            await self.client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. 4004 (token revoked): logged, never raised into the worker
            log.error("Discord gateway stopped: %s", type(exc).__name__, extra={"component": "discord"})

    async def _sync_commands(self) -> None:
        """Register the slash commands; transient failures are retried with backoff."""
        delay = 1.0
        while True:
            try:
                await self.tree.sync()
                return
            except asyncio.CancelledError:
                raise
            except discord.HTTPException as exc:
                if exc.status < 500 and exc.status != 429:
                    log.warning("could not sync Discord slash commands: HTTP %s", exc.status, extra={"component": "discord"})
                    return
                reason = f"HTTP {exc.status}"
            except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                reason = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - an unreadable answer: retrying cannot help
                log.warning("could not sync Discord slash commands: %s", type(exc).__name__, extra={"component": "discord"})
                return
            log.warning("could not sync Discord slash commands (%s); retrying in %.0f s", reason, delay,
                        extra={"component": "discord"})
            await asyncio.sleep(delay)
            delay = min(SYNC_RETRY_MAX_S, delay * 2)

    async def stop(self) -> None:
        """Disconnect (also after a failed start)."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
            self._sync_task = None
        await self.client.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def channel(self, channel_id: int) -> Any:
        """A messageable channel by id (cached, else a partial one)."""
        # a partial channel needs no lookup request per message; a wrong id still fails (404) on send
        return self.client.get_channel(channel_id) or self.client.get_partial_messageable(channel_id)

    async def send_reply(self, channel_id: int, reply: Reply, *, silent: bool = False,
                         progress: list[int] | None = None) -> list[int]:
        """Post a reply in a channel; returns the message ids.

        ``progress`` (ids of the messages already posted, appended to as they go) lets a retry
        of a reply longer than one message continue where the failed attempt stopped.
        """
        channel = await self.channel(channel_id)
        ids: list[int] = progress if progress is not None else []
        messages = render_embeds(reply)
        view = make_view(reply)
        try:
            for index, embeds in enumerate(messages):
                if index < len(ids):
                    continue  # posted by an earlier attempt
                kwargs: dict[str, Any] = {"embeds": embeds, "silent": silent}
                if index == 0 and reply.image_path and Path(reply.image_path).is_file():
                    kwargs["file"] = discord.File(reply.image_path, filename="chart.png")
                if index == len(messages) - 1 and view is not None:
                    kwargs["view"] = view
                ids.append((await channel.send(**kwargs)).id)
        finally:
            _release(view)
        return ids


class DiscordChannelSender:
    """Outbox destination: a Discord channel (``discord`` or ``discord_errors``)."""

    def __init__(self, adapter: DiscordAdapter, channel_id: int, name: str = "discord") -> None:
        self.adapter = adapter
        self.channel_id = channel_id
        self.name = name
        self._posted: dict[int, list[int]] = {}  # alert id -> messages posted by a failed attempt

    async def send(self, alert: OutgoingAlert) -> None:
        """Send, mapping Discord errors onto retry decisions; a retry never re-posts what already arrived."""
        progress = self._posted.setdefault(alert.id, [])
        try:
            await self.adapter.send_reply(self.channel_id, alert.reply, silent=alert.silent, progress=progress)
        except (discord.Forbidden, discord.NotFound) as exc:
            self._posted.pop(alert.id, None)
            raise DeliveryError(f"Discord refused ({exc.status})", permanent=True) from None
        except discord.HTTPException as exc:
            permanent = 400 <= exc.status < 429
            if permanent:
                self._posted.pop(alert.id, None)
            raise DeliveryError(f"Discord HTTP {exc.status}", permanent=permanent) from None
        except (TimeoutError, discord.DiscordException, OSError, aiohttp.ClientError) as exc:
            raise DeliveryError(f"Discord unreachable ({type(exc).__name__})") from None
        self._posted.pop(alert.id, None)


class DiscordApprovalNotifier:
    """Posts approval requests with Approve / Deny buttons and edits them with the decision.

    ``silent`` (``alerts.approval: silent``) posts the requests without notification sound.
    """

    name = "discord"

    def __init__(self, adapter: DiscordAdapter, channel_id: int, *, silent: bool = False) -> None:
        self.adapter = adapter
        self.channel_id = channel_id
        self.silent = silent

    async def post_request(self, reply: Reply) -> list[dict[str, Any]]:
        """Send the request; returns where it is."""
        ids = await self.adapter.send_reply(self.channel_id, reply, silent=self.silent)
        return [{"channel_id": self.channel_id, "message_id": ids[-1]}]

    async def update_request(self, ref: dict[str, Any], reply: Reply) -> None:
        """Replace the request with the outcome (no buttons)."""
        channel = await self.adapter.channel(int(ref["channel_id"]))
        await channel.get_partial_message(int(ref["message_id"])).edit(embeds=render_embeds(reply)[0], view=None)

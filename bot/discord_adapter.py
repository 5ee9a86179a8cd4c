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

import discord
from discord import app_commands

from alerts.senders import DeliveryError, OutgoingAlert
from bot.config import DiscordConfig
from bot.discord_render import make_view, render_embeds
from bot.logging_setup import secrets as log_secrets
from commands.model import ButtonResult, Caller, Reply
from commands.registry import CommandSpec, Dispatcher, split_args

log = logging.getLogger(__name__)

DEFER_AFTER_S = 2.0  # Discord wants a first response within 3 s
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


async def _send_reply(interaction: discord.Interaction, reply: Reply, *, ephemeral: bool = False) -> None:
    """Answer an interaction (first message as the response or follow-up, the rest as follow-ups)."""
    messages = render_embeds(reply)
    view = make_view(reply)
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
        """Route button presses (component interactions) to the dispatcher."""
        if interaction.type is not discord.InteractionType.component:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        if not custom_id.startswith(BUTTON_PREFIXES):
            return
        result = await self.dispatcher.press(interaction_caller(interaction), custom_id)
        if result is None:
            return  # stranger: ignored
        await self._answer_press(interaction, result)

    @staticmethod
    async def _answer_press(interaction: discord.Interaction, result: ButtonResult) -> None:
        if result.reply is not None and result.replace:
            messages = render_embeds(result.reply)
            await interaction.response.edit_message(embeds=messages[0], view=make_view(result.reply))
            for embeds in messages[1:]:
                await interaction.followup.send(embeds=embeds)
            return
        await interaction.response.send_message(result.toast[:2000] or "OK", ephemeral=True)
        if result.reply is not None:
            await _send_reply(interaction, result.reply)

    async def start(self) -> None:
        """Log in, connect to the gateway in the background, and sync the slash commands."""
        await self.client.login(self.config.token.get_secret_value())
        self._task = asyncio.create_task(self.client.connect(reconnect=True), name="discord-gateway")
        try:
            await self.tree.sync()
        except discord.HTTPException as exc:
            log.warning("could not sync Discord slash commands: HTTP %s", exc.status)
        log.info("Discord bot started", extra={"component": "discord"})

    async def stop(self) -> None:
        """Disconnect."""
        await self.client.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def channel(self, channel_id: int) -> Any:
        """A messageable channel by id (cached or fetched)."""
        channel = self.client.get_channel(channel_id)
        if channel is None:
            channel = await self.client.fetch_channel(channel_id)
        return channel

    async def send_reply(self, channel_id: int, reply: Reply, *, silent: bool = False) -> list[int]:
        """Post a reply in a channel; returns the message ids."""
        channel = await self.channel(channel_id)
        ids: list[int] = []
        messages = render_embeds(reply)
        view = make_view(reply)
        for index, embeds in enumerate(messages):
            kwargs: dict[str, Any] = {"embeds": embeds, "silent": silent}
            if index == 0 and reply.image_path and Path(reply.image_path).is_file():
                kwargs["file"] = discord.File(reply.image_path, filename="chart.png")
            if index == len(messages) - 1 and view is not None:
                kwargs["view"] = view
            ids.append((await channel.send(**kwargs)).id)
        return ids


class DiscordChannelSender:
    """Outbox destination: a Discord channel (``discord`` or ``discord_errors``)."""

    def __init__(self, adapter: DiscordAdapter, channel_id: int, name: str = "discord") -> None:
        self.adapter = adapter
        self.channel_id = channel_id
        self.name = name

    async def send(self, alert: OutgoingAlert) -> None:
        """Send, mapping Discord errors onto retry decisions."""
        try:
            await self.adapter.send_reply(self.channel_id, alert.reply, silent=alert.silent)
        except (discord.Forbidden, discord.NotFound) as exc:
            raise DeliveryError(f"Discord refused ({exc.status})", permanent=True) from None
        except discord.HTTPException as exc:
            raise DeliveryError(f"Discord HTTP {exc.status}", permanent=400 <= exc.status < 429) from None
        except (TimeoutError, discord.DiscordException, OSError) as exc:
            raise DeliveryError(f"Discord unreachable ({type(exc).__name__})") from None


class DiscordApprovalNotifier:
    """Posts approval requests with Approve / Deny buttons and edits them with the decision."""

    name = "discord"

    def __init__(self, adapter: DiscordAdapter, channel_id: int) -> None:
        self.adapter = adapter
        self.channel_id = channel_id

    async def post_request(self, reply: Reply) -> list[dict[str, Any]]:
        """Send the request; returns where it is."""
        ids = await self.adapter.send_reply(self.channel_id, reply)
        return [{"channel_id": self.channel_id, "message_id": ids[-1]}]

    async def update_request(self, ref: dict[str, Any], reply: Reply) -> None:
        """Replace the request with the outcome (no buttons)."""
        channel = await self.adapter.channel(int(ref["channel_id"]))
        await channel.get_partial_message(int(ref["message_id"])).edit(embeds=render_embeds(reply)[0], view=None)

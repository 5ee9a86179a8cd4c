"""Rendering a :class:`commands.model.Reply` as Discord embeds within Discord's limits.

Limits (Discord API docs): title 256, description 4096, 25 fields, field name 256, field value
1024, footer 2048, 6000 characters over all embeds of one message, 10 embeds per message.
Tables become code blocks in descriptions; what does not fit goes to further embeds and, past
6000 characters, further messages.
"""

from __future__ import annotations

from typing import Any

import discord

from commands.model import ButtonStyle, Reply

TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELDS_LIMIT = 25
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
MESSAGE_TOTAL_LIMIT = 6000
EMBEDS_PER_MESSAGE = 10

COLOURS = {"info": 0x3498DB, "success": 0x2ECC71, "warning": 0xF1C40F, "error": 0xE74C3C}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _description_blocks(reply: Reply) -> list[str]:
    """Free text and tables as description-sized blocks (code blocks never cut open)."""
    blocks: list[str] = []
    if reply.text:
        text = reply.text
        while text:
            blocks.append(text[:DESCRIPTION_LIMIT])
            text = text[DESCRIPTION_LIMIT:]
    fence_room = DESCRIPTION_LIMIT - len("```\n\n```") - 130  # room for a table title line
    for table in reply.tables:
        current: list[str] = []
        size = 0
        for line in table.lines():
            line = _clip(line, fence_room)
            if size + len(line) + 1 > fence_room and current:
                blocks.append(_fence(table.title, current))
                current, size = [], 0
            current.append(line)
            size += len(line) + 1
        if current:
            blocks.append(_fence(table.title, current))
    return blocks


def _fence(title: str, lines: list[str]) -> str:
    head = f"**{_clip(title, 120)}**\n" if title else ""
    return head + "```\n" + "\n".join(lines).replace("```", "'''") + "\n```"


def render_embed_dicts(reply: Reply) -> list[list[dict[str, Any]]]:
    """Messages, each a list of embed dicts within every Discord limit."""
    colour = COLOURS.get(reply.severity, COLOURS["info"])
    first: dict[str, Any] = {"title": _clip(reply.title or "-", TITLE_LIMIT), "color": colour}
    embeds: list[dict[str, Any]] = [first]
    fields = [
        {"name": _clip(name or "-", FIELD_NAME_LIMIT), "value": _clip(value or "-", FIELD_VALUE_LIMIT), "inline": False}
        for name, value in reply.fields
    ]
    # Fields: at most 25 per embed and never more than a message's 6000 characters in one embed.
    budget = MESSAGE_TOTAL_LIMIT - len(first["title"])
    current: list[dict[str, Any]] = []
    size = 0
    for f in fields:
        f_size = len(f["name"]) + len(f["value"])
        if current and (len(current) >= FIELDS_LIMIT or size + f_size > budget):
            embeds[-1]["fields"] = current
            embeds.append({"color": colour})
            current, size = [], 0
        current.append(f)
        size += f_size
    embeds[-1]["fields"] = current
    blocks = _description_blocks(reply)
    if blocks and _embed_size(embeds[0]) + len(blocks[0]) <= MESSAGE_TOTAL_LIMIT:
        embeds[0]["description"] = blocks.pop(0)
    embeds.extend({"color": colour, "description": block} for block in blocks)
    if reply.image_path:
        embeds[0]["image"] = {"url": "attachment://chart.png"}

    messages: list[list[dict[str, Any]]] = [[]]
    total = 0
    for embed in embeds:
        size = _embed_size(embed)
        if messages[-1] and (total + size > MESSAGE_TOTAL_LIMIT or len(messages[-1]) >= EMBEDS_PER_MESSAGE):
            messages.append([])
            total = 0
        messages[-1].append(embed)
        total += size
    return messages


def _embed_size(embed: dict[str, Any]) -> int:
    size = len(embed.get("title", "")) + len(embed.get("description", ""))
    for f in embed.get("fields", []):
        size += len(f["name"]) + len(f["value"])
    return size


def render_embeds(reply: Reply) -> list[list[discord.Embed]]:
    """Like :func:`render_embed_dicts`, as discord.py ``Embed`` objects."""
    return [[discord.Embed.from_dict(e) for e in message] for message in render_embed_dicts(reply)]


_STYLES = {
    ButtonStyle.PRIMARY: discord.ButtonStyle.primary,
    ButtonStyle.SUCCESS: discord.ButtonStyle.success,
    ButtonStyle.DANGER: discord.ButtonStyle.danger,
    ButtonStyle.SECONDARY: discord.ButtonStyle.secondary,
}


def make_view(reply: Reply) -> discord.ui.View | None:
    """Buttons as a persistent view; presses are routed by ``custom_id`` in the adapter."""
    if not reply.buttons:
        return None
    view = discord.ui.View(timeout=None)
    for row_index, row in enumerate(reply.buttons[:5]):
        for button in row[:5]:
            view.add_item(discord.ui.Button(label=_clip(button.label, 80), custom_id=button.data, style=_STYLES[button.style], row=row_index))
    return view

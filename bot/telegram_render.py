"""Rendering a :class:`commands.model.Reply` as Telegram HTML messages of at most 4096 characters.

Tables go in ``<pre>`` blocks; a message that is too long is split between lines, and a table
that does not fit is split into several ``<pre>`` blocks, so every chunk is valid HTML on its own.
"""

from __future__ import annotations

from html import escape

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from commands.model import Reply

TELEGRAM_LIMIT = 4096
CAPTION_LIMIT = 1024
_PRE_OVERHEAD = len("<pre></pre>")


def _hard_split(text: str, limit: int) -> list[str]:
    """Split one over-long raw line so that each escaped piece fits ``limit``."""
    pieces: list[str] = []
    current = ""
    for char in text:
        if len(escape(current + char, quote=False)) > limit:
            pieces.append(current)
            current = ""
        current += char
    if current:
        pieces.append(current)
    return pieces


def render_chunks(reply: Reply, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """The reply as one or more HTML strings, each at most ``limit`` characters."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0

    def flush() -> None:
        nonlocal current, size
        if current:
            chunks.append("\n".join(current))
        current, size = [], 0

    def add(piece: str) -> None:
        nonlocal size
        extra = len(piece) + (1 if current else 0)
        if size + extra > limit:
            flush()
            extra = len(piece)
        current.append(piece)
        size += extra

    def add_text_line(raw: str, bold_prefix: str = "") -> None:
        rendered = bold_prefix + escape(raw, quote=False)
        if len(rendered) <= limit:
            add(rendered)
            return
        for piece in _hard_split(raw, limit - len(bold_prefix)):
            add(bold_prefix + escape(piece, quote=False))
            bold_prefix = ""

    def add_pre(lines: list[str]) -> None:
        block: list[str] = []
        block_size = _PRE_OVERHEAD
        room = limit - _PRE_OVERHEAD
        for raw in lines:
            for line in _hard_split(raw, room) if len(escape(raw, quote=False)) > room else [raw]:
                escaped = escape(line, quote=False)
                extra = len(escaped) + (1 if block else 0)
                if block_size + extra > limit:
                    add("<pre>" + "\n".join(block) + "</pre>")
                    block, block_size = [], _PRE_OVERHEAD
                    extra = len(escaped)
                block.append(escaped)
                block_size += extra
        if block:
            add("<pre>" + "\n".join(block) + "</pre>")

    add(f"<b>{escape(reply.title[:512], quote=False)}</b>")
    for line in reply.text.splitlines() if reply.text else []:
        add_text_line(line)
    for name, value in reply.fields:
        add_text_line(f" {value}", f"<b>{escape(name, quote=False)}:</b>")
    for table in reply.tables:
        if table.title:
            add(f"<i>{escape(table.title, quote=False)}</i>")
        add_pre(table.lines())
    flush()
    return chunks


def keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    """Inline keyboard for the reply's buttons, or ``None``."""
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in reply.buttons])

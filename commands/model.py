"""Transport-neutral shapes: who is asking (:class:`Caller`) and what we answer (:class:`Reply`).

Commands never build Telegram HTML or Discord embeds: they return a :class:`Reply` that each
adapter renders in its own way (HTML with ``<pre>`` tables on Telegram, embeds on Discord).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True, slots=True)
class Caller:
    """The sender of a command or a button press.

    ``private`` is true for a one-to-one chat with the bot (Telegram private chat, Discord DM):
    an authorized user may always talk to the bot there, whatever the configured chats.
    """

    transport: str  # "telegram" or "discord"
    user_id: int
    chat_id: int
    display: str = ""
    private: bool = False

    @property
    def actor(self) -> str:
        """Audit-log spelling of the user: ``transport:user_id``."""
        return f"{self.transport}:{self.user_id}"

    @property
    def chat(self) -> str:
        """Audit-log spelling of the chat: ``transport:chat_id``."""
        return f"{self.transport}:{self.chat_id}"


class ButtonStyle(str, Enum):
    """Hint for adapters that can colour buttons (Discord); Telegram ignores it."""

    PRIMARY = "primary"
    SUCCESS = "success"
    DANGER = "danger"
    SECONDARY = "secondary"


@dataclass(frozen=True, slots=True)
class Button:
    """An inline button. ``data`` is opaque callback data (<= 64 bytes, Telegram's limit)."""

    label: str
    data: str
    style: ButtonStyle = ButtonStyle.SECONDARY

    def __post_init__(self) -> None:
        if len(self.data.encode()) > 64:
            raise ValueError(f"button data longer than 64 bytes: {self.data[:20]}...")


@dataclass(frozen=True, slots=True)
class Table:
    """A small monospace table: adapters render it in ``<pre>`` or a code block."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    title: str = ""

    def lines(self) -> list[str]:
        """The table as aligned text lines (header, rule, rows)."""
        columns = len(self.headers)
        cells = [list(self.headers)] + [list(row) + [""] * (columns - len(row)) for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(columns)]
        out = [" ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells[0])).rstrip()]
        out.append(" ".join("-" * w for w in widths))
        for row in cells[1:]:
            out.append(" ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:columns])).rstrip())
        return out


@dataclass(slots=True)
class Reply:
    """What a command or an alert says: rendered by each adapter.

    ``fields`` are (name, value) pairs shown one per line; ``text`` is free prose;
    ``image_path`` attaches an image (the daily equity chart); ``buttons`` are rows of buttons.
    ``severity`` lets adapters colour the message ("info", "warning", "error", "success").
    """

    title: str
    text: str = ""
    fields: list[tuple[str, str]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    buttons: list[list[Button]] = field(default_factory=list)
    image_path: str | None = None
    severity: str = "info"

    def plain_text(self) -> str:
        """A plain-text rendering (logs, webhook fallbacks, tests)."""
        parts = [self.title]
        if self.text:
            parts.append(self.text)
        parts.extend(f"{name}: {value}" for name, value in self.fields)
        for table in self.tables:
            if table.title:
                parts.append(table.title)
            parts.extend(table.lines())
        return "\n".join(parts)

    def to_payload(self) -> dict[str, object]:
        """JSON-serialisable form (stored in the alert outbox)."""
        return {
            "title": self.title,
            "text": self.text,
            "fields": [list(f) for f in self.fields],
            "tables": [{"title": t.title, "headers": list(t.headers), "rows": [list(r) for r in t.rows]} for t in self.tables],
            "buttons": [[{"label": b.label, "data": b.data, "style": b.style.value} for b in row] for row in self.buttons],
            "image_path": self.image_path,
            "severity": self.severity,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, object]) -> Reply:
        """Inverse of :meth:`to_payload` (tolerates missing keys from older rows)."""
        tables = [
            Table(
                headers=tuple(str(h) for h in t.get("headers", [])),
                rows=tuple(tuple(str(c) for c in row) for row in t.get("rows", [])),
                title=str(t.get("title", "")),
            )
            for t in payload.get("tables", []) or []  # type: ignore[union-attr]
        ]
        buttons = [
            [Button(str(b["label"]), str(b["data"]), ButtonStyle(b.get("style", "secondary"))) for b in row]
            for row in payload.get("buttons", []) or []  # type: ignore[union-attr]
        ]
        return cls(
            title=str(payload.get("title", "")),
            text=str(payload.get("text", "")),
            fields=[(str(n), str(v)) for n, v in payload.get("fields", []) or []],  # type: ignore[union-attr,misc]
            tables=tables,
            buttons=buttons,
            image_path=payload.get("image_path") or None,  # type: ignore[arg-type]
            severity=str(payload.get("severity", "info")),
        )


@dataclass(frozen=True, slots=True)
class ButtonResult:
    """What pressing a button produced.

    ``toast`` is the short acknowledgement (Telegram's callback answer, Discord's ephemeral
    note); ``reply`` replaces the pressed message when ``replace`` is true, else is sent anew.
    """

    toast: str
    reply: Reply | None = None
    replace: bool = True

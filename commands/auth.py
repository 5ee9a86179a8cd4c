"""Who may talk to the bot: allowed chats and users from the config, deny by default.

A caller is *authorized* when their user id is an authorized or admin user of that transport
AND the message comes from a configured chat (alert or error chat/channel) or from a private
chat with the bot. Everyone else is a stranger: ignored without a reply (and audited by the
dispatcher). Admins (a subset, implicitly authorized) may use controls and decide approvals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from bot.config import AppConfig
from commands.model import Caller


class Role(str, Enum):
    """What a caller may do."""

    STRANGER = "stranger"
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class TransportAccess:
    """The allow-lists of one transport."""

    chats: frozenset[int] = field(default_factory=frozenset)
    users: frozenset[int] = field(default_factory=frozenset)
    admins: frozenset[int] = field(default_factory=frozenset)


class Authorizer:
    """Maps a caller to a :class:`Role` using per-transport allow-lists."""

    def __init__(self, access: dict[str, TransportAccess]) -> None:
        self._access = dict(access)

    @classmethod
    def from_config(cls, config: AppConfig) -> Authorizer:
        """Allow-lists from ``telegram.*`` and ``discord.*`` (chat ids that are unset are skipped)."""
        tg, dc = config.telegram, config.discord
        return cls(
            {
                "telegram": TransportAccess(
                    chats=frozenset(c for c in (tg.chat_id, tg.error_chat_id) if c is not None),
                    users=frozenset(tg.authorized_users) | frozenset(tg.admin_users),
                    admins=frozenset(tg.admin_users),
                ),
                "discord": TransportAccess(
                    chats=frozenset(c for c in (dc.channel_id, dc.error_channel_id) if c is not None),
                    users=frozenset(dc.authorized_users) | frozenset(dc.admin_users),
                    admins=frozenset(dc.admin_users),
                ),
            }
        )

    def role(self, caller: Caller) -> Role:
        """The caller's role; unknown transports, users or chats are strangers."""
        access = self._access.get(caller.transport)
        if access is None or caller.user_id not in access.users:
            return Role.STRANGER
        if not (caller.private or caller.chat_id in access.chats):
            return Role.STRANGER
        return Role.ADMIN if caller.user_id in access.admins else Role.USER

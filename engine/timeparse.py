"""Times typed by a person on the command line, as UTC epoch milliseconds."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime


def parse_utc_ms(text: str) -> int:
    """``2024-01-31``, ``2024-01-31T12:00`` (or with a space), ``...Z``/``+02:00``, or epoch ms -> epoch ms.

    Times without a zone are UTC. Raises ``ValueError`` naming the accepted forms.
    """
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date or time: use 2024-01-31, 2024-01-31T12:00[Z] or epoch milliseconds") \
            from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def utc_ms_argument(text: str) -> int:
    """:func:`parse_utc_ms` as an argparse ``type=`` (argparse shows this message, not a generic one)."""
    try:
        return parse_utc_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

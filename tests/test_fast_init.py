"""``fast_frozen_init``: the market-data records keep every behaviour of a frozen dataclass.

The candle, the feed's kline update and trade tick, and the exchange's kline and trade events are
built through the faster ``__init__``; each must still take the same arguments, refuse to change,
compare, hash, pickle and ``replace`` exactly as the dataclass does.
"""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from engine.exchange.bingx.events import KlineEvent, TradeEvent
from engine.fast_init import fast_frozen_init
from engine.market.candle import Candle
from engine.market.events import KlineUpdate, TradeTick

D = Decimal("1.5")
RECORDS: list[tuple[type, tuple[Any, ...]]] = [
    (Candle, (1_700_000_000_000, 1.0, 2.0, 0.5, 1.5, 10.0)),
    (KlineUpdate, ("XRP-USDT", 1_700_000_000_000, 1.0, 2.0, 0.5, 1.5, 10.0)),
    (TradeTick, ("XRP-USDT", 1.5, 3.0, 1_700_000_000_000)),
    (KlineEvent, ("XRP-USDT", "1m", 1_700_000_000_000, D, D, D, D, D)),
    (TradeEvent, ("XRP-USDT", 1_700_000_000_000, D, D, True)),
]


def _reference(cls: type) -> type:
    """The same fields as ``cls`` in a plain ``@dataclass(frozen=True, slots=True)``, to compare with."""
    return dataclasses.make_dataclass(cls.__name__, [(f.name, f.type) for f in dataclasses.fields(cls)],
                                      frozen=True, slots=True)


@pytest.mark.parametrize(("cls", "args"), RECORDS, ids=[c.__name__ for c, _ in RECORDS])
def test_the_market_records_behave_as_frozen_dataclasses(cls: type, args: tuple[Any, ...]) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    record = cls(*args)
    assert [getattr(record, n) for n in names] == list(args)
    assert cls(**dict(zip(names, args))) == record  # by keyword too
    assert list(inspect.signature(cls).parameters) == names
    assert repr(record) == repr(_reference(cls)(*args))
    assert hash(record) == hash(cls(*args)) and record != cls(*args[:-1], "other")
    assert pickle.loads(pickle.dumps(record)) == record
    changed = dataclasses.replace(record, **{names[-1]: args[0]})
    assert getattr(changed, names[-1]) == args[0] and getattr(record, names[-1]) == args[-1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, names[0], args[1])
    with pytest.raises(TypeError, match="missing"):
        cls(*args[:-1])
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls(*args, extra=1)
    assert not hasattr(record, "__dict__")  # still slotted


def test_defaults_are_kept_and_unsupported_classes_are_refused_when_defined() -> None:
    @fast_frozen_init
    @dataclass(frozen=True, slots=True)
    class WithDefault:
        a: int
        b: str = "x"

    assert WithDefault(1) == WithDefault(1, "x") and WithDefault(1, b="y").b == "y"

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class WithFactory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True)
    class WithPostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    for cls in (NotFrozen, WithFactory, WithPostInit, NoSlots):
        with pytest.raises(TypeError, match="fast_frozen_init"):
            fast_frozen_init(cls)

"""A local BingX USDT-M perpetual exchange replaying 1m candle files (``trading-bot simulate``).

See ``engine/simulator/README.md``. Entry points: :class:`SimulatorServer` (in-process,
for tests) and :mod:`engine.simulator.cli` (the command line).
"""

from .faults import Faults
from .markets import MarketSpec
from .server import SimulatorServer

__all__ = ["Faults", "MarketSpec", "SimulatorServer"]

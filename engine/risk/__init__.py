"""Risk: trading states, the pre-trade gate, protections, reconciliation, emergency stop,
graceful-shutdown pieces, the single-instance lock and pre-flight checks.

Modules (one job each):
- ``events``: the alert events this package emits through a callable the lead wires
- ``state``: RUNNING / PAUSED / HALTED / REDUCING, persisted with reason and actor
- ``protections``: cooldown, loss streak, daily loss, drawdown kill switch, API-error
  breaker, reconciliation halt; persisted as ``ProtectionLock`` rows
- ``gate``: the pre-trade gate (every order that opens risk)
- ``manager``: :class:`RiskManager`, the one object the worker and chat commands hold
- ``stop_file``: the STOP-file watcher
- ``reconcile``: exchange versus database
- ``emergency``: cancel everything, close everything, verify flat
- ``shutdown``: the pieces of a graceful shutdown
- ``instance_lock``: one bot per account and database
- ``preflight``: start-up checks (also ``trading-bot doctor``)
- ``cli``: ``trading-bot emergency-stop``
"""

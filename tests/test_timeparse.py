"""Command-line times: one parser behind backtest, simulate and download."""

from __future__ import annotations

import argparse

import pytest

from engine.backtest.cli import parse_time_ms as backtest_time
from engine.data.cli import parse_time_ms as download_time
from engine.simulator.cli import parse_start as simulate_start
from engine.timeparse import utc_ms_argument


@pytest.mark.parametrize("parse", [backtest_time, download_time, simulate_start])
def test_every_cli_reads_the_same_forms(parse) -> None:
    for text in ("2021-04-20T20:42", "2021-04-20 20:42", "2021-04-20T20:42:00Z", "2021-04-20T22:42+02:00",
                 "1618951320000"):
        assert parse(text) == 1618951320000


def test_a_bad_time_is_a_clear_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--from", dest="from_ms", type=utc_ms_argument)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--from", "yesterday"])
    assert exited.value.code == 2
    assert "'yesterday' is not a date or time: use 2024-01-31" in capsys.readouterr().err

"""The simulator's command line: argument handling, and a real process serving on a free port."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from engine.simulator import cli

from tests.simulator_rawclient import NANO_FILE, RawBingX

PROJECT = Path(__file__).resolve().parents[1]
ENTRY = (
    "import argparse,sys; from engine.simulator import cli; p=argparse.ArgumentParser(); "
    "cli.configure_parser(p); sys.exit(cli.run(p.parse_args(sys.argv[1:])))"
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    return parser.parse_args(list(argv))


def test_arguments() -> None:
    args = parse("--data", "a.csv.gz", "--symbol", "A-USDT", "--data", "b.csv.gz", "--symbol", "B-USDT",
                 "--speed", "max", "--start", "2021-05-20T00:00:00Z", "--hang-orders", "2", "--reject-next-order", "101204")
    assert args.data == ["a.csv.gz", "b.csv.gz"] and args.symbol == ["A-USDT", "B-USDT"]
    assert args.speed is None and args.port == 8080
    assert args.start == 1621468800000
    assert parse("--data", "x", "--symbol", "X-USDT", "--speed", "2.5").speed == 2.5
    assert cli.parse_start("1621468800000") == 1621468800000
    with pytest.raises(SystemExit):
        parse("--data", "x", "--symbol", "X-USDT", "--speed", "fast")


def test_fault_flags_reach_the_server() -> None:
    args = parse("--data", str(NANO_FILE), "--symbol", "nano-usdt", "--hang-orders", "2", "--reject-next-order", "101204",
                 "--rest-5xx-fraction", "0.25", "--clock-skew-ms", "-500", "--ws-drop-every", "3", "--latency-ms", "20",
                 "--one-way", "--recv-window", "relaxed", "--api-key", "k", "--api-secret", "s")
    server = cli.build_server(args)
    assert server.specs[0].symbol == "NANO-USDT"
    f = server.faults
    assert (f.hang_next_orders, f.rest_5xx_fraction, f.clock_skew_ms, f.ws_drop_every_s, f.latency_ms) == (2, 0.25, -500, 3.0, 20.0)
    assert f.reject_next_orders[0][0] == 101204
    assert server.hedge_mode is False and server.api_key == "k"


def test_bad_input_exits_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(parse("--data", str(NANO_FILE), "--symbol", "A-USDT", "--symbol", "B-USDT")) == 2
    assert "one --symbol for every --data" in capsys.readouterr().err
    assert cli.run(parse("--data", "/no/such/file.csv.gz", "--symbol", "A-USDT")) == 2
    assert "no such data file" in capsys.readouterr().err


async def start_cli(*argv: str, env: dict[str, str] | None = None) -> tuple[asyncio.subprocess.Process, str]:
    """Run the CLI in a subprocess; return it and its REST URL once it says it is ready."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ENTRY, *argv, cwd=str(PROJECT), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    text = line.decode()
    assert text.startswith("SIMULATOR READY"), text
    rest_url = text.split("rest=", 1)[1].split()[0]
    return proc, rest_url


async def test_cli_process_serves_and_stops_on_sigterm() -> None:
    proc, rest_url = await start_cli(
        "--data", str(NANO_FILE), "--symbol", "NANO-USDT", "--port", "0", "--paused", "--start", "1621500000000",
        env={"BINGX_API_KEY": "env-key", "BINGX_API_SECRET": "env-secret"},
    )
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, rest_url, "env-key", "env-secret")
            assert await client.server_time() == 1621500000000 - 1621500000000 % 60_000
            assert (await client.signed("GET", "/openApi/swap/v3/user/balance")).code == 0
            assert (await client.signed("GET", "/openApi/swap/v3/user/balance", secret="test-secret")).code == 100001
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0

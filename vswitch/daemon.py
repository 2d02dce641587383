"""vswitchd: the per-node daemon. Loads the config, starts the data plane
and the control API on uvloop, and shuts down cleanly on SIGTERM/SIGINT
(ports removed, socket removed)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import uvloop

from . import __version__, api
from .config import Config, ConfigError, load
from .switch import Switch

log = logging.getLogger("vswitch.daemon")

# How often stale FDB entries are swept out; lookups already ignore entries
# past the aging time, so this only bounds how long they occupy memory.
FDB_SWEEP_INTERVAL = 1.0


async def _sweep_fdb(switch: Switch):
    while True:
        await asyncio.sleep(FDB_SWEEP_INTERVAL)
        switch.expire_fdb()


async def serve(config: Config) -> int:
    loop = asyncio.get_running_loop()
    try:
        switch = Switch(config, loop)
    except ConfigError as e:    # what the config names cannot be had: an address, a directory
        print(f"vswitchd: config error: {e}", file=sys.stderr)
        return 2
    try:
        await switch.start()
    except ConfigError as e:
        switch.close()
        print(f"vswitchd: config error: {e}", file=sys.stderr)
        return 2
    try:
        server = await api.start(config.socket, switch)
    except (RuntimeError, OSError) as e:
        log.error("cannot listen on %s: %s", config.socket, e)
        return 1
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(_sweep_fdb(switch))
    log.info("vswitchd %s on %s: mode %s, networks %s, socket %s", __version__,
             config.node_name, config.mode, ", ".join(n.name for n in config.networks),
             config.socket)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        sweeper.cancel()
        server.close()
        try:
            os.unlink(config.socket)
        except FileNotFoundError:
            pass
        switch.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vswitchd", description="vswitch per-node daemon")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config file (default: built-in defaults)")
    parser.add_argument("--version", action="version", version=f"vswitchd {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as e:
        print(f"vswitchd: config error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return uvloop.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())

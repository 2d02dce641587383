"""vswitchd: the per-node daemon. Loads the config, re-attaches the ports a
previous run left, starts the data plane and the control API on uvloop,
and tells the service manager (sd_notify) when it is ready. SIGHUP reloads
the config; SIGTERM/SIGINT stop it, leaving the pods' interfaces for the
next start."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import uvloop

from . import __version__, api, metrics, reporting
from .config import Config, ConfigError, load
from .errors import ReloadRefused, VswitchError
from .switch import Switch
from .systemd import Notifier

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger("vswitch.daemon")

# How often a slice of the FDB is swept for stale entries (lookups already
# ignore entries past the aging time, so this only bounds how long they
# occupy memory), and how often learned peers age and ports whose namespace
# was deleted are noticed.
FDB_SWEEP_INTERVAL = 0.1
HOUSEKEEPING_INTERVAL = 1.0


async def periodic(name: str, interval: float, *steps):
    """Run the steps every `interval` seconds for ever. A step that fails is
    logged (once per distinct error, not every round) and the others, and
    the next rounds, go on: no failure stops a periodic task silently."""
    failing: dict[str, str] = {}
    while True:
        await asyncio.sleep(interval)
        for step in steps:
            try:
                step()
            except Exception as e:
                if failing.get(step.__name__) != repr(e):
                    log.exception("%s: %s failed (logged once until it changes)", name,
                                  step.__name__)
                failing[step.__name__] = repr(e)
            else:
                failing.pop(step.__name__, None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the
    traceback, if any), for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class Service:
    """The running daemon: the switch, its API, and its dealings with the
    service manager (readiness, watchdog, reload, stop)."""

    def __init__(self, config: Config, config_path: str | None, switch: Switch,
                 cluster: "Cluster | None" = None):
        self.config, self.config_path, self.switch = config, config_path, switch
        self.cluster = cluster
        self.notifier = Notifier()
        self.stopping = asyncio.Event()
        self.remove_ports = False
        self._reload_lock = asyncio.Lock()
        self.metrics_server: asyncio.AbstractServer | None = None

    async def _serve_metrics(self, listen: str | None):
        """(Re)start the Prometheus endpoint on `listen` (None: none)."""
        if self.metrics_server:
            self.metrics_server.close()
            self.metrics_server = None
        if listen:
            try:
                self.metrics_server = await metrics.start(listen, self.switch)
            except OSError as e:
                raise ConfigError("metrics.listen",
                                  f"cannot listen on {listen}: {e.strerror}") from None

    def summary(self) -> str:
        s = reporting.status(self.switch)
        return (f"{s['mode']} mode, {s['ports']} ports, {len(s['networks'])} networks, "
                f"{s['peers']} peers, {s['fdb_entries']} FDB entries")

    def stop(self, remove_ports: bool = False):
        self.remove_ports = self.remove_ports or remove_ports
        self.stopping.set()

    async def reload(self) -> dict:
        """Re-read the config file and apply it; a config that is invalid or
        cannot be applied live is refused and the running one stays."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                try:
                    # (off the loop: filling in what is not set may ask netlink)
                    new = await asyncio.get_running_loop().run_in_executor(
                        None, load, self.config_path)
                except ConfigError as e:
                    raise ReloadRefused(f"config error: {e}") from None
                if new.cluster:             # networks are the cluster's, not the file's
                    new = dataclasses.replace(new, networks=self.switch.config.networks)
                self.switch.check_reload(new)       # before anything changes
                if new.metrics_listen != self.config.metrics_listen:
                    try:
                        await self._serve_metrics(new.metrics_listen)
                    except ConfigError as e:
                        raise ReloadRefused(str(e)) from None
                changes = await self.switch.reload(new)
                if new.metrics_listen != self.config.metrics_listen:
                    changes.append(f"metrics on {new.metrics_listen or 'nothing'}")
                self.config = new
                logging.getLogger().setLevel(new.log_level.upper())
                log.info("reloaded %s: %s", self.config_path or "built-in defaults",
                         "; ".join(changes) or "no changes")
                return {"changes": changes}
            except ReloadRefused as e:
                log.error("reload refused, running config kept: %s", e)
                raise
            finally:
                self.notifier.ready(self.summary())

    def _reload_signal(self):
        task = asyncio.ensure_future(self.reload())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())   # logged already

    def _status(self):
        self.notifier.status(self.summary())

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        config = self.config
        try:
            await self._serve_metrics(config.metrics_listen)
        except ConfigError as e:
            print(f"vswitchd: config error: {e}", file=sys.stderr)
            self.switch.close()
            return 2
        try:
            server = await api.start(config.socket, self.switch, self)
        except (RuntimeError, OSError) as e:
            log.error("cannot listen on %s: %s", config.socket, e)
            self.switch.close()
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_signal)
        switch = self.switch
        tasks = [asyncio.create_task(switch.loop_lag.run()),
                 asyncio.create_task(periodic("fdb sweep", FDB_SWEEP_INTERVAL, switch.expire_fdb,
                                              switch.expire_conntrack, switch.dataplane.reclaim)),
                 asyncio.create_task(periodic("housekeeping", HOUSEKEEPING_INTERVAL,
                                              switch.check_namespaces, switch.overlay.expire_peers))]
        if self.cluster:
            tasks.append(asyncio.create_task(periodic("cluster", HOUSEKEEPING_INTERVAL,
                                                      self.cluster.housekeeping)))
        if self.notifier.watchdog_interval:
            # On the event loop: if the loop is stuck, the keep-alives stop and
            # the service manager restarts us. The status line is a step of
            # its own: a report that fails must not stop the keep-alives.
            tasks.append(asyncio.create_task(periodic(
                "watchdog", self.notifier.watchdog_interval, self.notifier.watchdog,
                self._status)))
        log.info("vswitchd %s on %s: mode %s, networks %s, socket %s", __version__,
                 config.node_name, config.mode, ", ".join(n.name for n in config.networks),
                 config.socket)
        self.notifier.ready(self.summary())
        try:
            await self.stopping.wait()
        finally:
            self.notifier.stopping()
            log.info("stopping%s", ", removing all ports" if self.remove_ports else
                     "; pod interfaces stay for the next start")
            for task in tasks:
                task.cancel()
            if self.cluster:
                await self.cluster.close()
            server.close()
            if self.metrics_server:
                self.metrics_server.close()
            try:
                os.unlink(self.config.socket)
            except FileNotFoundError:
                pass
            self.switch.close(self.remove_ports)
            self.notifier.close()
        return 0


async def serve(config: Config, config_path: str | None = None) -> int:
    loop = asyncio.get_running_loop()
    try:
        switch = Switch(config, loop)
    except ConfigError as e:    # what the config names cannot be had: an address, a directory
        print(f"vswitchd: config error: {e}", file=sys.stderr)
        return 2
    cluster = None
    if config.cluster:          # (grpc loads only in cluster mode: start-up stays quick)
        from .cluster import Cluster
        cluster = Cluster(config, switch)
    try:
        if cluster:                 # its networks first: the ports re-attach into them
            await cluster.restore()
        await switch.start()
        if cluster:
            await cluster.start()
    except (ConfigError, VswitchError) as e:  # a bad config, or a name a live node has
        switch.close()
        print(f"vswitchd: {'config' if isinstance(e, ConfigError) else 'cluster'} error: {e}",
              file=sys.stderr)
        return 2
    return await Service(config, config_path, switch, cluster).run()


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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=config.log_level.upper(), handlers=[handler])
    return uvloop.run(serve(config, args.config))


if __name__ == "__main__":
    sys.exit(main())

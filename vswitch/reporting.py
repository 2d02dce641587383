"""What the switch reports: status, counters, the FDB, ports, traces, and
the names of data-plane port ids. Read-only views over a Switch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .port import Port
    from .switch import Switch


def port_info(switch: Switch, port: Port) -> dict:
    return {"name": port.name, "netns": port.netns or "(host)", "ifname": port.ifname,
            "network": port.network.name, "mac": port.mac,
            "addresses": [str(a) for a in port.addresses], "mtu": port.mtu,
            "state": port.state, "id": port.port_id,
            "offloads": port.tap.offloads if port.tap else [], "error": port.error,
            "port_security": port.secured, "rates": port.rates,
            "container": "/".join(port.attachment) if port.attachment else None,
            "pod": None if port.is_host else
            {**port.identity.to_json(), "name": port.identity.name or port.name},
            "policies": None if port.is_host else switch.policy.enforced(port),
            "counters": port.final_counters or switch.dataplane.port_counters(port.port_id)}


def trace(switch: Switch, port_name: str, frame: bytes) -> dict:
    """Where a frame from the port would go and why (nothing is learned or
    sent): the data plane's steps, with names for ids."""
    steps = switch.dataplane.trace(switch.up_port(port_name).port_id, frame)
    for step in steps:
        for key in ("port", "peer", "known_at"):
            if isinstance(step.get(key), int):
                step[key] = switch.port_label(step[key])
        for key in ("ports", "peers"):
            if key in step:
                step[key] = [switch.port_label(x) for x in step[key]]
    return {"port": port_name, "frame": frame.hex(), "steps": steps}


def conntrack(switch: Switch, port_name: str | None = None, limit: int = 0) -> list[dict]:
    """Tracked connections (of one port; at most limit, 0: all), ports by name."""
    port_id = switch.up_port(port_name).port_id if port_name else -1
    entries = switch.dataplane.conntrack(port_id, limit)
    for e in entries:
        for key in ("in_port", "out_port", "charged_to"):
            e[key] = "vxlan" if e[key] is None else switch.port_label(e[key])
    return entries


def conntrack_per_pod(switch: Switch) -> dict[str, int]:
    """Connections charged to each port (the pod that opened them, see
    conntrack_max_per_pod), by name."""
    return {"vxlan" if port is None else switch.port_label(port): n
            for port, n in sorted(switch.dataplane.conntrack_usage().items(),
                                  key=lambda item: -item[1])}


def fdb(switch: Switch, network: str | None = None) -> list[dict]:
    by_id = {p.port_id: p.name for p in switch.ports.values() if p.state == "up"}
    entries = switch.dataplane.fdb_entries(switch.network(network).name if network else None)
    return sorted(({"network": net, "mac": mac,
                    "port": by_id.get(pid, f"#{pid}") if peer is None else f"vxlan:{peer}",
                    "age": round(age, 1), "static": static, "pinned": pinned}
                   for net, mac, pid, peer, age, static, pinned in entries),
                  key=lambda e: (e["network"], e["port"], e["mac"]))


def stats(switch: Switch) -> dict:
    counters = switch.dataplane.counters()
    counters["ports"] = {p.name: p.final_counters or switch.dataplane.port_counters(p.port_id)
                         for p in switch.ports.values()}
    counters["peers"] = switch.overlay.peers()
    counters["capture"] = switch.captures.stats()
    counters["hooks"] = switch.hooks.stats() if switch.hooks else []
    counters["cluster"] = switch.cluster.metrics() if switch.cluster else None
    counters["loop_lag"] = switch.loop_lag.report()
    counters["conntrack"]["per_pod"] = conntrack_per_pod(switch)
    counters["workers"] = switch.dataplane.worker_counters()
    return counters


def status(switch: Switch) -> dict:
    config = switch.config
    return {"node": config.node_name, "mode": config.mode,
            "version": __version__, "uptime": round(time.monotonic() - switch.started, 1),
            "ports": len(switch.ports), "networks": [n.name for n in config.networks],
            "workers": switch.dataplane.workers,
            "mtu": {n.name: {"mtu": n.mtu, "from": n.mtu_from} for n in config.networks},
            "fdb_entries": switch.dataplane.counters()["fdb"]["entries"],
            "aging_time": switch.dataplane.aging_time,
            "vtep": str(config.overlay.vtep_ip) if config.overlay else None,
            "peers": switch.overlay.peer_count(),
            "cluster": switch.cluster.metrics() if switch.cluster else None,
            "loop_lag": switch.loop_lag.report(),
            "masquerade": {"networks": switch.masquerade.rules, "error": switch.masquerade.error,
                           "warnings": switch.egress_warnings}}

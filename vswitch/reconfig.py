"""Reconfiguration as a plan: `plan(old, new)` compares two configs and
returns the steps that turn a node running `old` into one running `new`,
touching nothing that did not change, or refuses the whole change
(ReloadRefused) when it alters what only a restart can. It is a pure
function (no I/O, no state); Switch.reload carries the steps out in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import masquerade
from .config import Config, NetworkConfig
from .errors import ReloadRefused
from .protocol import MAX_NETWORKS, ReloadAction

# Config keys a reload cannot change (a restart can).
FIXED_ON_RELOAD = {"node_name": "node.name", "mode": "node.mode", "socket": "node.socket",
                   "state_dir": "node.state_dir", "log_format": "node.log_format",
                   "fdb_max_entries": "fdb.max_entries", "batch": "datapath.batch",
                   "workers": "datapath.workers",
                   "conntrack_max": "datapath.conntrack_max",
                   "conntrack_max_per_pod": "datapath.conntrack_max_per_pod",
                   "service_cidrs": "node.service_cidrs",
                   "offloads": "datapath.offloads", "hooks": "[[hook]]",
                   "cluster": "[cluster]"}
FIXED_NETWORK_KEYS = ("vni", "subnet", "block", "gateway", "host_port", "subnet6", "block6",
                      "gateway6")
# A cluster network's gateway is the node's own choice (cluster.py), made
# once it holds an address block: its host port comes and goes in place.
HOST_PORT_KEYS = ("gateway", "gateway6", "host_port")
TUNNEL_KEYS = ("underlay_mtu", "learn_peers", "max_learned_peers", "peer_aging_time")


@dataclass(frozen=True)
class Step:
    """One change. add_network: index is its place in the new config;
    host_port (a cluster network's): value is the network as it was;
    tunnel: the new overlay settings; the peer steps: value is the peer."""
    action: ReloadAction
    text: str                       # what the change log says
    network: NetworkConfig | None = None
    index: int = 0
    value: Any = None

    @property
    def net(self) -> NetworkConfig:
        """The network of a network step."""
        assert self.network is not None, self.action
        return self.network


def check(old: Config, new: Config):
    """ReloadRefused if `new` changes what only a restart can."""
    for attr, key in FIXED_ON_RELOAD.items():
        if getattr(new, attr) != getattr(old, attr):
            raise ReloadRefused(f"{key} cannot change on reload; restart vswitchd for that")
    if old.overlay and new.overlay and (new.overlay.vtep_ip, new.overlay.udp_port) != \
            (old.overlay.vtep_ip, old.overlay.udp_port):
        raise ReloadRefused("overlay.vtep_ip and overlay.udp_port cannot change on reload")
    for i, net in enumerate(new.networks):
        before = old.network(net.name)
        for key in FIXED_NETWORK_KEYS if before else ():
            if key in HOST_PORT_KEYS and (net.block_size or net.block_size6) is not None:
                continue
            if getattr(net, key) != getattr(before, key):
                raise ReloadRefused(f"network[{i}].{key} of {net.name!r} cannot change on "
                                    "reload (pods are addressed from it); remove the network "
                                    "in one reload and add it back in another")
    if len({*(n.name for n in old.networks), *(n.name for n in new.networks)}) >= MAX_NETWORKS:
        raise ReloadRefused("too many networks")


def plan(old: Config, new: Config) -> list[Step]:
    """The steps from old to new, in the order they must run: networks that
    go first (with their ports), then new networks and MTUs in the new
    config's order, the FDB and poller settings, the tunnel, the peers."""
    check(old, new)
    steps = [Step(ReloadAction.REMOVE_NETWORK, f"network {net.name} removed", net)
             for net in old.networks if new.network(net.name) is None]
    for i, net in enumerate(new.networks):
        before = old.network(net.name)
        if before is None:
            steps.append(Step(ReloadAction.ADD_NETWORK, f"network {net.name} added", net, i))
            continue
        if before.mtu != net.mtu:
            steps.append(Step(ReloadAction.SET_MTU, f"network {net.name} mtu {before.mtu} -> {net.mtu}", net))
        if any(getattr(before, k) != getattr(net, k) for k in HOST_PORT_KEYS):
            now = f"{net.host_port} ({net.gateway})" if net.host_port else "none"
            steps.append(Step(ReloadAction.HOST_PORT, f"network {net.name} host port: {now}", net, i,
                              value=before))
    if masquerade.ruleset(new.networks) != masquerade.ruleset(old.networks):
        steps.append(Step(ReloadAction.MASQUERADE, "masquerade: " + (", ".join(
            n.name for n in new.networks if n.masquerade) or "none")))
    if new.aging_time != old.aging_time:
        steps.append(Step(ReloadAction.AGING_TIME, f"aging_time {old.aging_time:g} -> {new.aging_time:g}",
                          value=new.aging_time))
    if new.busy_poll_us != old.busy_poll_us:
        steps.append(Step(ReloadAction.BUSY_POLL_US,
                          f"busy_poll_us {old.busy_poll_us:g} -> {new.busy_poll_us:g}",
                          value=new.busy_poll_us))
    if old.overlay and new.overlay:             # (a mode change was refused above)
        ov_old, ov_new = old.overlay, new.overlay
        if any(getattr(ov_new, k) != getattr(ov_old, k) for k in TUNNEL_KEYS):
            steps.append(Step(ReloadAction.TUNNEL, ", ".join(f"{k} {getattr(ov_new, k)}"
                                                             for k in TUNNEL_KEYS),
                              value=ov_new))
        steps += [Step(ReloadAction.REMOVE_PEER, f"peer {ip} removed", value=ip)
                  for ip in set(ov_old.peers) - set(ov_new.peers)]
        steps += [Step(ReloadAction.ADD_PEER, f"peer {ip} added", value=ip)
                  for ip in sorted(set(ov_new.peers) - set(ov_old.peers))]
    return steps

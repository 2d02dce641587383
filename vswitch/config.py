"""The daemon's configuration: one TOML file, validated into dataclasses.

Every problem is reported as a ConfigError naming the offending key
(`network[1].vni`, `fdb.aging_time`, ...); the daemon exits 2 on it.
Without a file, the built-in defaults below describe a working bridge-mode
node with one network.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

from .encap import VXLAN, Encapsulation
from .protocol import (
    CAPTURE_POINTS,
    DEFAULT_SOCKET,
    IFNAME_RE,
    IFNAME_RULE,
    MAX_NETWORK_MTU,
    MAX_WORKERS,
    MIN_MTU,
)

DEFAULT_STATE_DIR = "/var/lib/vswitch"
# Built-in network: 198.18.0.0/15 is reserved for benchmarking and never
# routed, so trying vswitch out cannot clash with a real network.
DEFAULT_NETWORK = {"name": "default", "vni": 42, "subnet": "198.18.0.0/16",
                   "block": "198.18.1.0/24", "mtu": 1450}

MAX_SERVICE_CIDRS = 16      # the data plane's MAX_SERVICE_RANGES
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


class ConfigError(Exception):
    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    vni: int
    subnet: ipaddress.IPv4Network | None   # None: IPv6 only (subnet6)
    block: ipaddress.IPv4Network | None
    mtu: int
    gateway: ipaddress.IPv4Address | None = None   # None: the block's first address
    host_port: str | None = None                    # host-side interface name, if any
    block_size: int | None = None   # cluster networks: the prefix length of the blocks nodes
                                    # claim (block is then the whole subnet)
    block_size6: int | None = None  # ... and of their IPv6 blocks (block6: the whole subnet6)
    masquerade: bool = False        # pods reach outside, source-NATed to the node (host port)
    mtu_from: str = "config"        # where mtu came from, when it was not set (status)
    # Dual-stack: the IPv6 subnet, this node's block of it and its gateway
    # there (None: the block's first address), as for IPv4.
    subnet6: ipaddress.IPv6Network | None = None
    block6: ipaddress.IPv6Network | None = None
    gateway6: ipaddress.IPv6Address | None = None

    def subnet_of(self, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The subnet of an IP version (None: the network has none)."""
        return self.subnet if version == 4 else self.subnet6


@dataclass(frozen=True)
class OverlayConfig:
    vtep_ip: ipaddress.IPv4Address | ipaddress.IPv6Address     # peers are of its family
    udp_port: int = 4789
    peers: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    underlay_mtu: int = 1500
    underlay_mtu_from: str = "config"  # when not set: the interface holding vtep_ip
    learn_peers: bool = False
    max_learned_peers: int = 64        # learn_peers: how many peers it may add at most
    peer_aging_time: float = 300.0     # ... and how long they live unheard

    @property
    def encapsulation(self) -> Encapsulation:
        return VXLAN

    @property
    def overhead(self) -> int:
        """What a pod MTU loses to the underlay MTU (the encapsulation says)."""
        return self.encapsulation.overhead(self.vtep_ip.version)


@dataclass(frozen=True)
class ClusterConfig:
    etcd: tuple[str, ...]                  # endpoint URLs, http:// or https://
    prefix: str = "/vswitch"               # every key lives under it
    ca_file: str | None = None             # TLS: the CA that signed etcd's certificate
    cert_file: str | None = None           # ... and this node's client certificate and key
    key_file: str | None = None
    lease_ttl: int = 15                    # seconds the node record outlives its last renewal
    grace_period: float = 86400.0          # a dead node's blocks stay reserved this long
    max_blocks: int = 16                   # address blocks per network one node may hold
    block_release_after: float = 300.0     # an extra empty block goes back after this long
    arp_suppression: bool = True           # answer ARP for known pod addresses locally


@dataclass(frozen=True)
class HookConfig:
    call: str                                 # "module:function" or "/path/file.py:function"
    points: tuple[str, ...] | None = None     # None: every capture point
    port: str | None = None
    filter: str | None = None                 # tcpdump syntax


# Cluster mode's FDB holds a static entry per remote pod: 5,000 nodes of 30
# pods each, with room (the table's memory is touched only as it fills).
CLUSTER_FDB_MAX_ENTRIES = 1 << 20


@dataclass(frozen=True)
class Config:
    node_name: str
    mode: str = "bridge"
    socket: str = DEFAULT_SOCKET
    state_dir: str = DEFAULT_STATE_DIR
    log_level: str = "info"
    log_format: str = "text"
    aging_time: float = 300.0
    fdb_max_entries: int = 65536
    fdb_max_per_port: int = 1024     # learned MACs one port may hold (a pod has one)
    fdb_max_per_peer: int = 16384    # ... and one peer (a node's pods)
    workers: int = 0                 # forwarding threads; 0: the CPUs the daemon may run on
    batch: int = 64
    busy_poll_us: float = 50.0
    offloads: bool = True
    conntrack_max: int = 262144      # connections NetworkPolicy tracks at once
    conntrack_max_per_pod: int = 0   # ... charged to one pod (0: an eighth of conntrack_max)
    # Where kube-proxy's ClusterIPs live: pods' egress to them is judged
    # after the node's DNAT (on the backend), not on the ClusterIP.
    service_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    networks: tuple[NetworkConfig, ...] = field(default_factory=tuple)
    overlay: OverlayConfig | None = None
    hooks: tuple[HookConfig, ...] = ()
    metrics_listen: str | None = None        # "HOST:PORT" of the Prometheus endpoint
    cluster: ClusterConfig | None = None     # cluster mode: networks and peers from etcd

    def datapath_settings(self) -> dict:
        """The data plane's construction arguments (Datapath), resolved:
        conntrack_max_per_pod 0 is an eighth of the table, workers 0 the
        CPUs this process may run on (a systemd CPUAffinity= or a cgroup
        cpuset sizes it)."""
        return {"workers": min(self.workers or len(os.sched_getaffinity(0)), MAX_WORKERS),
                "fdb_max_entries": self.fdb_max_entries, "aging_time": self.aging_time,
                "batch": self.batch, "busy_poll_us": self.busy_poll_us,
                "fdb_max_per_port": self.fdb_max_per_port,
                "fdb_max_per_peer": self.fdb_max_per_peer, "conntrack_max": self.conntrack_max,
                "conntrack_max_per_pod": self.conntrack_max_per_pod
                or max(self.conntrack_max // 8, 1)}

    def network(self, name: str) -> NetworkConfig | None:
        return next((n for n in self.networks if n.name == name), None)


class _Table:
    """Reads keys of one TOML table, checking type and range, remembering
    which keys were consumed so that unknown ones are reported."""

    def __init__(self, data, prefix: str):
        if not isinstance(data, dict):
            raise ConfigError(prefix, "must be a table")
        self.data, self.prefix = data, prefix
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(self, name, kind, default, check=None, hint=""):
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ConfigError(self.key(name), f"must be {names}, got {value!r}")
        if check is not None and not check(value):
            raise ConfigError(self.key(name), f"{hint}, got {value!r}")
        return value

    def done(self):
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(self.key(unknown[0]), "unknown key")


def _cidr(table: _Table, name: str, default: str | None) -> ipaddress.IPv4Network:
    text = table.get(name, str, default)
    if text is None:
        raise ConfigError(table.key(name), "is required")
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as e:
        raise ConfigError(table.key(name), f"not an IPv4 network in CIDR form ({e})") from None


def _service_cidrs(node: _Table) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    texts = node.get("service_cidrs", list, [])
    if len(texts) > MAX_SERVICE_CIDRS:
        raise ConfigError(node.key("service_cidrs"), f"at most {MAX_SERVICE_CIDRS} ranges")
    out = []
    for i, text in enumerate(texts):
        try:
            if not isinstance(text, str):
                raise TypeError(f"{text!r} is not a string")
            out.append(ipaddress.ip_network(text))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{node.key('service_cidrs')}[{i}]",
                              f"not a network in CIDR form ({e})") from None
    return tuple(out)


def _network(data, index: int) -> NetworkConfig:
    t = _Table(data, f"network[{index}]")
    name = t.get("name", str, None, NAME_RE.match,
                 "must be 1-32 lowercase letters, digits or '-'")
    if name is None:
        raise ConfigError(t.key("name"), "is required")
    vni = t.get("vni", int, None, lambda v: 1 <= v <= 0xFFFFFF, "must be 1..16777215")
    if vni is None:
        raise ConfigError(t.key("vni"), "is required")
    if "subnet" not in t.data and "subnet6" in t.data:      # IPv6 only
        subnet = block = None
        for key in ("block", "gateway"):
            if key in t.data:
                raise ConfigError(t.key(key), "needs subnet (this network is IPv6 only)")
    else:
        subnet = _cidr(t, "subnet", None)
        block = _cidr(t, "block", str(subnet))
        if not block.subnet_of(subnet):
            raise ConfigError(t.key("block"), f"{block} is not inside subnet {subnet}")
    mtu = t.get("mtu", int, 0, lambda v: MIN_MTU <= v <= MAX_NETWORK_MTU,
                f"must be {MIN_MTU}..{MAX_NETWORK_MTU}")      # 0: from the underlay (parse)
    gateway = t.get("gateway", str, None)
    if gateway is not None and block is not None:
        gateway = _ipv4(t, "gateway", gateway)
        if gateway not in block or gateway in (block.network_address, block.broadcast_address):
            raise ConfigError(t.key("gateway"), f"{gateway} is not a host address of block {block}")
    subnet6, block6, gateway6 = _ipv6_family(t, block)
    if subnet is None and subnet6 is None:
        raise ConfigError(t.key("subnet"), "is required (or subnet6 alone: IPv6 only)")
    host_port = t.get("host_port", str, None, IFNAME_RE.match,
                      f"must be an interface name of {IFNAME_RULE}")
    # On by default where pods have a way out (the host port is their gateway).
    masquerade = t.get("masquerade", bool, host_port is not None)
    if masquerade and host_port is None:
        raise ConfigError(t.key("masquerade"), "needs a host_port: pods leave through the "
                          "node's stack, with the host port as their gateway")
    t.done()
    return NetworkConfig(name, vni, subnet, block, mtu, gateway, host_port,
                         masquerade=masquerade, subnet6=subnet6, block6=block6, gateway6=gateway6)


def _ipv6_family(t: _Table, block: ipaddress.IPv4Network | None):
    """A network's IPv6 subnet, block and gateway (all None: IPv4 only).
    The block is at most a /120 and holds as many addresses as the IPv4
    block at least, so that every pod gets one of each."""
    text = t.get("subnet6", str, None)
    if text is None:
        for key in ("block6", "gateway6"):
            if key in t.data:
                raise ConfigError(t.key(key), "needs subnet6")
        return None, None, None
    subnet6 = _cidr6(t, "subnet6", text)
    block6 = _cidr6(t, "block6", t.get("block6", str, text))
    if not block6.subnet_of(subnet6):
        raise ConfigError(t.key("block6"), f"{block6} is not inside subnet6 {subnet6}")
    if block6.num_addresses < max(block.num_addresses if block else 0, 256):
        raise ConfigError(t.key("block6"), f"{block6} is smaller than a /120 or than block "
                          f"{block}: every pod gets an address of each family")
    gateway6 = t.get("gateway6", str, None)
    if gateway6 is not None:
        try:
            gateway6 = ipaddress.IPv6Address(gateway6)
        except ValueError as e:
            raise ConfigError(t.key("gateway6"), f"not an IPv6 address ({e})") from None
        if gateway6 not in block6 or gateway6 == block6.network_address:
            raise ConfigError(t.key("gateway6"), f"{gateway6} is not a host address of block6 "
                              f"{block6}")
    return subnet6, block6, gateway6


def _cidr6(t: _Table, key: str, text: str) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.IPv6Network(text)
    except ValueError as e:
        raise ConfigError(t.key(key), f"not an IPv6 network in CIDR form ({e})") from None
    if net.is_link_local or net.is_multicast or net.prefixlen > 120:
        raise ConfigError(t.key(key), f"{net}: must be a unicast, non-link-local prefix of "
                          "/120 or shorter")
    return net


def _defaults(cls) -> SimpleNamespace:
    """A config dataclass's defaults by field name: the one place a default
    is written is the dataclass."""
    return SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(cls)})


def parse(data: dict) -> Config:
    dc = _defaults(Config)
    top = _Table(data, "")
    node = _Table(top.get("node", dict, {}), "node")
    fdb = _Table(top.get("fdb", dict, {}), "fdb")
    datapath = _Table(top.get("datapath", dict, {}), "datapath")
    cfg = dict(
        node_name=node.get("name", str, socket.gethostname(), bool, "must not be empty"),
        mode=node.get("mode", str, dc.mode, lambda v: v in ("bridge", "overlay"),
                      'must be "bridge" or "overlay"'),
        socket=node.get("socket", str, dc.socket, lambda v: v.startswith("/"),
                        "must be an absolute path"),
        state_dir=node.get("state_dir", str, dc.state_dir, lambda v: v.startswith("/"),
                           "must be an absolute path"),
        log_level=node.get("log_level", str, dc.log_level,
                           lambda v: v in ("debug", "info", "warning", "error"),
                           "must be debug, info, warning or error"),
        log_format=node.get("log_format", str, dc.log_format, lambda v: v in ("text", "json"),
                            'must be "text" or "json"'),
        aging_time=fdb.get("aging_time", float, dc.aging_time, lambda v: 1 <= v <= 86400,
                           "must be 1..86400 seconds"),
        fdb_max_entries=fdb.get("max_entries", int, CLUSTER_FDB_MAX_ENTRIES if "cluster" in data
                                else dc.fdb_max_entries, lambda v: 1 <= v <= 1 << 24,
                                "must be 1..16777216"),
        fdb_max_per_port=fdb.get("max_per_port", int, dc.fdb_max_per_port, lambda v: 1 <= v <= 1 << 24,
                                 "must be 1..16777216"),
        fdb_max_per_peer=fdb.get("max_per_peer", int, dc.fdb_max_per_peer, lambda v: 1 <= v <= 1 << 24,
                                 "must be 1..16777216"),
        workers=datapath.get("workers", int, dc.workers, lambda v: 1 <= v <= MAX_WORKERS,
                             f"must be 1..{MAX_WORKERS}"),
        batch=datapath.get("batch", int, dc.batch, lambda v: 1 <= v <= 1024, "must be 1..1024"),
        busy_poll_us=datapath.get("busy_poll_us", float, dc.busy_poll_us, lambda v: 0 <= v <= 10000,
                                  "must be 0..10000 microseconds"),
        offloads=datapath.get("offloads", bool, dc.offloads),
        conntrack_max=datapath.get("conntrack_max", int, dc.conntrack_max, lambda v: 1 <= v <= 1 << 24,
                                   "must be 1..16777216"),
        conntrack_max_per_pod=datapath.get("conntrack_max_per_pod", int, dc.conntrack_max_per_pod,
                                           lambda v: 0 <= v <= 1 << 24, "must be 0..16777216"),
        service_cidrs=_service_cidrs(node),
    )
    cluster = None
    if "cluster" in data:
        cluster = _cluster(top.get("cluster", dict, None))
        if cfg["mode"] != "overlay" and "mode" in node.data:
            raise ConfigError("node.mode", 'must be "overlay" in cluster mode (or left out)')
        if "network" in data:
            raise ConfigError("network", "networks are cluster-wide in cluster mode: create them "
                              "with `vswitchctl network create`")
        if not NODE_NAME_RE.match(cfg["node_name"]):
            raise ConfigError("node.name", f"{cfg['node_name']!r}: in cluster mode 1-63 letters, "
                              "digits, '.', '_' or '-', starting with a letter or digit (it is "
                              "part of etcd keys)")
        cfg["mode"] = "overlay"
    raw_networks = [] if cluster else top.get("network", list, [DEFAULT_NETWORK])
    if not raw_networks and not cluster:
        raise ConfigError("network", "at least one [[network]] is required")
    networks = tuple(_network(n, i) for i, n in enumerate(raw_networks))
    for i, n in enumerate(networks):
        for other in networks[:i]:
            if n.name == other.name:
                raise ConfigError(f"network[{i}].name", f"duplicate network {n.name!r}")
            if n.vni == other.vni:
                raise ConfigError(f"network[{i}].vni", f"VNI {n.vni} already used by {other.name!r}")
            if n.host_port and n.host_port == other.host_port:
                raise ConfigError(f"network[{i}].host_port",
                                  f"{n.host_port!r} already used by {other.name!r}")
    overlay = None
    if cfg["mode"] == "overlay":
        overlay = _overlay(top.get("overlay", dict, {} if cluster else None), bool(cluster))
    networks = tuple(_derived_mtu(n, overlay) for n in networks)
    if overlay:
        for i, n in enumerate(networks):
            if n.mtu + overlay.overhead > overlay.underlay_mtu:
                raise ConfigError(f"network[{i}].mtu", f"{n.mtu} + {overlay.overhead} bytes of "
                                  f"{overlay.encapsulation.name.upper()} overhead exceeds "
                                  f"overlay.underlay_mtu {overlay.underlay_mtu}")
    elif "overlay" in data:
        raise ConfigError("overlay", 'only used with node.mode = "overlay"')
    hooks = tuple(_hook(h, i) for i, h in enumerate(top.get("hook", list, [])))
    metrics = _Table(top.get("metrics", dict, {}), "metrics")
    listen = metrics.get("listen", str, None, _host_port, 'must be "HOST:PORT", e.g. '
                         '"127.0.0.1:9477"')
    for t in (node, fdb, datapath, metrics, top):
        t.done()
    return Config(networks=networks, overlay=overlay, hooks=hooks, metrics_listen=listen,
                  cluster=cluster, **cfg)


def _cluster(data) -> ClusterConfig:
    t = _Table(data, "cluster")
    endpoints = t.get("etcd", list, None)
    if not endpoints:
        raise ConfigError(t.key("etcd"), 'is required: a list of etcd endpoint URLs, e.g. '
                          '["http://192.0.2.10:2379"]')
    for url in endpoints:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.path not in ("", "/"):
            raise ConfigError(t.key("etcd"), f"{url!r} is not an http:// or https:// URL "
                              "of an etcd endpoint (scheme://host:port)")
        try:
            _ = parts.port          # raises on a port out of range
        except ValueError:
            raise ConfigError(t.key("etcd"), f"{url!r} has a bad port") from None
    files = {k: t.get(k, str, None, lambda v: v.startswith("/"), "must be an absolute path")
             for k in ("ca_file", "cert_file", "key_file")}
    for k, path in files.items():
        if path is not None and not Path(path).is_file():
            raise ConfigError(t.key(k), f"{path} is not a readable file")
    if bool(files["cert_file"]) != bool(files["key_file"]):
        raise ConfigError(t.key("key_file" if files["cert_file"] else "cert_file"),
                          "cert_file and key_file go together")
    tls = any(files.values())
    for url in endpoints:
        if tls != url.startswith("https://"):
            raise ConfigError(t.key("etcd"), f"{url!r}: use https:// URLs with ca_file, "
                              "cert_file and key_file, and http:// without them")
    dc = _defaults(ClusterConfig)
    config = ClusterConfig(
        etcd=tuple(endpoints),
        prefix=t.get("prefix", str, dc.prefix, PREFIX_RE.match,
                     'must be a key prefix like "/vswitch" (letters, digits, "/", "-", "_")'),
        lease_ttl=t.get("lease_ttl", int, dc.lease_ttl, lambda v: 2 <= v <= 3600, "must be 2..3600 seconds"),
        grace_period=t.get("grace_period", float, dc.grace_period, lambda v: 0 <= v <= 365 * 86400,
                           "must be 0..31536000 seconds"),
        max_blocks=t.get("max_blocks", int, dc.max_blocks, lambda v: 1 <= v <= 4096, "must be 1..4096"),
        block_release_after=t.get("block_release_after", float, dc.block_release_after,
                                  lambda v: 0 <= v <= 86400 * 30, "must be 0..2592000 seconds"),
        arp_suppression=t.get("arp_suppression", bool, dc.arp_suppression),
        **files)
    t.done()
    return config


PREFIX_RE = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _hook(data, index: int) -> HookConfig:
    t = _Table(data, f"hook[{index}]")
    call = t.get("call", str, None, lambda v: ":" in v and all(v.rpartition(":")[::2]),
                 'must be "module:function" or "/path/file.py:function"')
    if call is None:
        raise ConfigError(t.key("call"), "is required")
    points = t.get("point", (str, list), None)
    if points is not None:
        points = (points,) if isinstance(points, str) else tuple(points)
        bad = [p for p in points if p not in CAPTURE_POINTS]
        if bad or not points:
            raise ConfigError(t.key("point"), f"must be among {', '.join(CAPTURE_POINTS)}")
    hook = HookConfig(call, points, t.get("port", str, None), t.get("filter", str, None))
    t.done()
    return hook


def _ipv4(table: _Table, key: str, text) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise ConfigError(table.key(key), f"not an IPv4 address: {text!r}") from None


def node_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a node can have addr as its VTEP: unicast, not loopback or
    240/4, not IPv4-mapped or link-local IPv6 (the unspecified address
    would also read as a free slot in the data plane)."""
    if addr.version == 6:
        return not (addr.is_unspecified or addr.is_multicast or addr.is_loopback
                    or addr.is_link_local or addr.ipv4_mapped is not None)
    return not (addr.is_unspecified or addr.is_multicast or addr.is_loopback
                or addr.is_reserved or addr == ipaddress.IPv4Address("255.255.255.255"))


def _vtep_address(table: _Table, key: str, text) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(table.key(key), f"not an IPv4 or IPv6 address: {text!r}") from None
    if not node_address(addr):
        raise ConfigError(table.key(key), f"{addr} is not a unicast address a node can have")
    return addr


def _overlay(data, cluster: bool = False) -> OverlayConfig:
    if data is None:
        raise ConfigError("overlay", 'is required with node.mode = "overlay" (at least vtep_ip)')
    t = _Table(data, "overlay")
    vtep = t.get("vtep_ip", str, None)
    if vtep is None and cluster:
        vtep = default_route_address()
        if vtep is None:
            raise ConfigError(t.key("vtep_ip"), "not set, and no IPv4 default route with an "
                              "address to take it from")
    if vtep is None:
        raise ConfigError(t.key("vtep_ip"), "is required in overlay mode")
    peers = t.get("peers", list, [])
    dc = _defaults(OverlayConfig)
    config = OverlayConfig(
        vtep_ip=_vtep_address(t, "vtep_ip", vtep),
        udp_port=t.get("udp_port", int, dc.udp_port, lambda v: 1 <= v <= 65535, "must be 1..65535"),
        peers=tuple(_vtep_address(t, "peers", p) for p in peers),
        underlay_mtu=t.get("underlay_mtu", int, 0, lambda v: 576 <= v <= 65535,
                           "must be 576..65535"),
        learn_peers=t.get("learn_peers", bool, dc.learn_peers),
        max_learned_peers=t.get("max_learned_peers", int, dc.max_learned_peers, lambda v: 1 <= v <= 1000,
                                "must be 1..1000"),
        peer_aging_time=t.get("peer_aging_time", float, dc.peer_aging_time, lambda v: 1 <= v <= 86400,
                              "must be 1..86400 seconds"),
    )
    if any(p.version != config.vtep_ip.version for p in config.peers):
        raise ConfigError(t.key("peers"), f"must be IPv{config.vtep_ip.version} addresses, as "
                          "vtep_ip is: the underlay has one family")
    if config.vtep_ip in config.peers:
        raise ConfigError(t.key("peers"), f"lists this node's own vtep_ip {config.vtep_ip}")
    t.done()
    if not config.underlay_mtu:
        found = interface_mtu(config.vtep_ip)
        config = dataclasses.replace(
            config, underlay_mtu=min(max(found[1], 576), 65535) if found else 1500,
            underlay_mtu_from=f"interface {found[0]}" if found else
            f"no interface has {config.vtep_ip}: Ethernet's 1500")
    return config


def _derived_mtu(net: NetworkConfig, overlay: OverlayConfig | None) -> NetworkConfig:
    """A network without an mtu gets its underlay's: the underlay MTU less
    the VXLAN overhead in overlay mode, the uplink's (the interface of the
    IPv4 default route) in bridge mode."""
    if net.mtu:
        return net
    if overlay:
        mtu = overlay.underlay_mtu - overlay.overhead
        source = f"overlay.underlay_mtu {overlay.underlay_mtu} ({overlay.underlay_mtu_from}) " \
                 f"less {overlay.overhead} of {overlay.encapsulation.name.upper()}"
    else:
        found = interface_mtu(None)
        mtu = found[1] if found else 1500
        source = f"interface {found[0]}" if found else "no default route: Ethernet's 1500"
    return dataclasses.replace(net, mtu=max(MIN_MTU, min(mtu, MAX_NETWORK_MTU)), mtu_from=source)


def interface_mtu(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
                  ) -> tuple[str, int] | None:
    """(name, MTU) of the interface holding address, or (None) of the IPv4
    default route's; None when there is none."""
    from pyroute2 import IPRoute  # netlink at config time: only for what is not set
    with IPRoute() as ipr:
        if address is not None:
            family = socket.AF_INET if address.version == 4 else socket.AF_INET6
            indexes = [a["index"] for a in ipr.get_addr(family=family)
                       if ipaddress.ip_address(a.get_attr("IFA_ADDRESS")) == address]
        else:
            indexes = [r.get_attr("RTA_OIF") for r in
                       ipr.get_default_routes(family=socket.AF_INET) if r.get_attr("RTA_OIF")]
        for link in (ipr.get_links(i)[0] for i in indexes[:1]):
            return link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_MTU")
    return None


def default_route_address() -> str | None:
    """This node's underlay address when none is configured: the source
    address of the IPv4 default route, or the first address of its interface."""
    from pyroute2 import IPRoute  # only when needed: netlink at config time is rare
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            src = route.get_attr("RTA_PREFSRC")
            if src:
                return src
            for addr in ipr.get_addr(family=socket.AF_INET, index=route.get_attr("RTA_OIF")):
                return addr.get_attr("IFA_ADDRESS")
    return None


def load(path: str | None) -> Config:
    """The config from a TOML file, or the built-in defaults when path is None."""
    if path is None:
        return parse({})
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, f"not valid TOML: {e}") from None
    return parse(data)

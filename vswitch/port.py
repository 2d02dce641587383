"""A port as the control plane knows it: the pod (or host) interface, its
addresses, its state, who the pod is for NetworkPolicy, and its rate
limits. Beneath the switch, the policy engine and the cluster, which all
speak of ports."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from . import netpol
from .config import NetworkConfig
from .errors import InvalidRequest
from .netpol import PROTOCOLS
from .protocol import MAX_RATE, RATE_KEYS

if TYPE_CHECKING:
    from .tap import Tap


def check_rates(rates) -> dict:
    """Rate limits: known keys, integers 0..MAX_RATE (0: none)."""
    if not isinstance(rates, dict):
        raise InvalidRequest("rates must be an object of rate limits")
    for key, value in rates.items():
        if key not in RATE_KEYS:
            raise InvalidRequest(f"unknown rate {key!r} (known: {', '.join(RATE_KEYS)})")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RATE:
            raise InvalidRequest(f"{key} must be an integer 0..{MAX_RATE} (bits/s or bits), "
                                 f"got {value!r}")
    return {k: v for k, v in rates.items() if v}


@dataclass
class PodIdentity:
    """A pod as policies see it. Ports made by hand are pods of namespace
    "default" named after the port unless told otherwise."""
    namespace: str = "default"
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    named_ports: dict[str, tuple[str, int]] = field(default_factory=dict)   # name -> (TCP, 80)

    def to_json(self) -> dict:
        return {"namespace": self.namespace, "name": self.name, "labels": self.labels,
                "named_ports": {k: list(v) for k, v in self.named_ports.items()}}

    @classmethod
    def from_json(cls, obj, path: str = "pod") -> PodIdentity:
        """From a request or a record; InvalidRequest names what is wrong."""
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise InvalidRequest(f"{path} must be an object")
        name = obj.get("name") or ""
        if not isinstance(name, str) or len(name) > 253:
            raise InvalidRequest(f"{path}.name must be a string of at most 253 characters")
        return cls(netpol.check_namespace(obj.get("namespace") or "default", f"{path}.namespace"),
                   name, netpol.check_labels(obj.get("labels") or {}, f"{path}.labels"),
                   named_ports(obj.get("named_ports") or {}, f"{path}.named_ports"))


def named_ports(obj, path: str = "named_ports") -> dict[str, tuple[str, int]]:
    """Container port names: {"http": 80, "dns": "UDP/53", "x": ["TCP", 81]}."""
    if not isinstance(obj, dict):
        raise InvalidRequest(f"{path} must be an object of port names")
    out = {}
    for name, value in obj.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not netpol.PORT_NAME.match(name):
            raise InvalidRequest(f"{where}: not a port name (1-15 lowercase letters, digits, '-')")
        if isinstance(value, str):
            protocol, _, number = value.rpartition("/")
            protocol = protocol or "TCP"
        elif isinstance(value, list) and len(value) == 2:
            protocol, number = value
        else:
            protocol, number = "TCP", value
        try:
            port = int(number)
        except (TypeError, ValueError):
            port = 0
        if protocol not in PROTOCOLS or not 1 <= port <= 65535 or isinstance(number, bool):
            raise InvalidRequest(f"{where}: {value!r} is not PORT or PROTOCOL/PORT "
                                 "(TCP, UDP or SCTP; 1..65535)")
        out[name] = (protocol, port)
    return out


@dataclass
class Port:
    name: str
    netns: str
    ifname: str
    network: NetworkConfig
    mac: str
    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]
    tap: Tap | None         # None: a recorded port that could not be restored
    port_id: int
    mtu: int
    secured: bool = False   # port security: bound to its MAC and addresses
    attachment: tuple[str, str] | None = None   # (container id, ifname) for CNI ports
    netns_id: tuple[int, int] | None = None     # the namespace's (st_dev, st_ino)
    rates: dict = field(default_factory=dict)    # RATE_KEYS -> bits/s or bits
    # "up": in the data plane. "fenced": held down (cluster mode: while the
    # node cannot prove it still holds its addresses), its interface gone or
    # never opened, its record and allocation kept: it comes back by itself.
    # "lost": its device or namespace disappeared under us, or its address
    # block went to another node; it stays listed until deleted.
    state: str = "up"
    final_counters: dict | None = None          # once lost: its counters at that moment
    error: str | None = None                    # why it is lost, when it never came up
    identity: PodIdentity = field(default_factory=PodIdentity)   # who the pod is, for policy

    @property
    def is_host(self) -> bool:
        return self.netns is None


class PortObserver(Protocol):
    """Told when a port starts or stops forwarding for good (cluster mode
    publishes its addresses)."""

    def port_up(self, port: Port) -> None: ...
    def port_down(self, port: Port) -> None: ...




def unknown_network() -> NetworkConfig:
    """The network of a port whose record names none that exists."""
    return NetworkConfig("?", 0, ipaddress.IPv4Network("0.0.0.0/32"),
                         ipaddress.IPv4Network("0.0.0.0/32"), 0)

"""What an encapsulation between nodes is to the rest of the switch: what it
costs a pod's MTU on each underlay family, the sockets it sends and receives
on, and what it must know of a peer beyond its address. VXLAN is the one
there is (RFC 7348; the data plane builds and checks its headers in C); an
encrypted overlay is another implementation of the same seam, so the
config, the cluster, the API and the data plane's MTU checks ask this
module and never count header bytes themselves."""

from __future__ import annotations

import ipaddress
from typing import Protocol

from .protocol import ETH_HLEN, VXLAN_OUTER_OVERHEAD
from .tunnel import Tunnel

IP6_EXTRA = 40 - 20          # an IPv6 outer header over an IPv4 one


class Encapsulation(Protocol):
    name: str
    peer_attributes: tuple[str, ...]    # what a peer needs beyond its VTEP address

    def outer_overhead(self, version: int) -> int:
        """Bytes around an inner frame on an IPv`version` underlay."""
        ...

    def overhead(self, version: int) -> int:
        """What a pod MTU (its IP packet) loses to the underlay MTU."""
        ...

    def open(self, vtep_ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
             udp_port: int, workers: int = 1) -> Tunnel:
        """Its sockets, bound to this node's VTEP address: a set per
        forwarding thread."""
        ...


class Vxlan:
    name = "vxlan"
    peer_attributes: tuple[str, ...] = ()

    def outer_overhead(self, version: int) -> int:
        """Outer IP, UDP and VXLAN headers."""
        return VXLAN_OUTER_OVERHEAD + (IP6_EXTRA if version == 6 else 0)

    def overhead(self, version: int) -> int:
        """The inner Ethernet header, and the outer headers around it."""
        return ETH_HLEN + self.outer_overhead(version)

    def open(self, vtep_ip, udp_port: int, workers: int = 1) -> Tunnel:
        return Tunnel(vtep_ip, udp_port, workers)


VXLAN = Vxlan()

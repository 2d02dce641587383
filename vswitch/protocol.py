"""What vswitch's clients (vswitchctl, the CNI plugin, scripts) and the daemon
share, written once. Imports nothing of the daemon, so that clients load
fast and never pull in the data plane."""

from __future__ import annotations

import ipaddress
import re
import struct
from enum import StrEnum


class ErrorKind(StrEnum):
    """A failure's word for programs (an error answer's "kind"): the CNI
    plugin turns it into a CNI error code (cni.KIND_CODES)."""
    BUSY = "busy"                       # try again (CNI 11)
    EXHAUSTED = "exhausted"             # no address or block left (CNI 101)
    UNAVAILABLE = "unavailable"         # the request clashes with what exists (CNI 12)
    INVALID = "invalid"                 # malformed configuration (CNI 7)
    UNKNOWN_NETWORK = "unknown_network"
    CHECK = "check"                     # CNI CHECK found the attachment changed
    ETCD_REFUSED = "etcd_refused"       # etcd refused for good (CNI 100)


class ReloadAction(StrEnum):
    """The kinds of step a reload is made of (reconfig.plan)."""
    REMOVE_NETWORK = "remove_network"
    ADD_NETWORK = "add_network"
    SET_MTU = "set_mtu"
    HOST_PORT = "host_port"
    MASQUERADE = "masquerade"
    AGING_TIME = "aging_time"
    BUSY_POLL_US = "busy_poll_us"
    TUNNEL = "tunnel"
    REMOVE_PEER = "remove_peer"
    ADD_PEER = "add_peer"


# The control socket (HTTP/1.1 with JSON bodies over AF_UNIX).
DEFAULT_SOCKET = "/run/vswitch/vswitchd.sock"

# Capture points and their bits, as the data plane's CAP_* (_capture.pxd;
# the extension checks it agrees when it loads).
CAPTURE_POINTS = {"ingress": 1, "egress": 2, "encap": 4, "decap": 8, "drop": 16}
CAPTURE_POINT_NAMES = {bit: name for name, bit in CAPTURE_POINTS.items()}
ALL_CAPTURE_POINTS = sum(CAPTURE_POINTS.values())
MAX_SNAPLEN = 65535

# Capture streams: each record is two chunks, its metadata (JSON) and its
# bytes, each preceded by its length (4 bytes, network order).
CHUNK_LENGTH = struct.Struct("!I")


def capture_chunks(meta: bytes, data: bytes) -> bytes:
    """One capture record as the stream carries it."""
    return CHUNK_LENGTH.pack(len(meta)) + meta + CHUNK_LENGTH.pack(len(data)) + data

# Why the data plane drops frames, in the order of its enum (_counters.pxd):
# the data plane takes its names from here, and a unit test compares the two.
DROP_NAMES = ("runt", "oversize", "bad_source", "spoofed_source", "ra_guard", "mac_pinned",
              "rate_limited", "loop", "no_route", "bad_vnet_hdr", "bad_vxlan", "unknown_vni",
              "unknown_peer", "peer_not_member", "needs_segmentation", "too_big", "port_down",
              "queue_full", "write_error", "policy_denied", "conntrack_full", "nd_spoofed",
              "conntrack_pod_full")

# Per-port rate limits, from the switch's side: ingress is what the port
# sends into the switch (the pod's upload), egress what the switch writes to it.
RATE_KEYS = ("ingress_rate", "ingress_burst", "egress_rate", "egress_burst")
# A port's counters, as every report names them (rx: from the pod).
PORT_COUNTERS = ("rx_packets", "rx_bytes", "rx_dropped", "tx_packets", "tx_bytes", "tx_dropped",
                 "policy_denied")
MAX_RATE = 10**13           # bits/s or bits: 10 Tbit/s is more than any port moves

# A container id as CNI runtimes give it.
CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Interface names: as long as Linux accepts (IFNAMSIZ less the final NUL), in
# a portable alphabet.
MAX_IFNAME_LEN = 15
IFNAME_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_IFNAME_LEN - 1}}}$")
IFNAME_RULE = f"1-{MAX_IFNAME_LEN} letters, digits, '.', '_' or '-', starting with a letter or digit"
PORT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Sizes on the wire. A pod's MTU is its IP packet; the tunnel adds the inner
# Ethernet header and its own outer IPv4, UDP and VXLAN headers.
ETH_HLEN = 14
VXLAN_OUTER_OVERHEAD = 20 + 8 + 8            # outer IPv4 + UDP + VXLAN (the data plane's)
MIN_MTU, MAX_MTU = 68, 65535                 # IPv4's minimum; the data plane's maximum
# A network's pod MTU: encapsulated (vswitch/encap.py says by how much), it still fits.
MAX_NETWORK_MTU = MAX_MTU - ETH_HLEN - VXLAN_OUTER_OVERHEAD
UDP_GRO = 104                                # linux/udp.h socket option
MAX_NETWORKS = 4096                          # network ids a data plane has (1..4095)
MAX_WORKERS = 64                             # its forwarding threads, and queues of a port


def link_local(mac: str) -> ipaddress.IPv6Address:
    """The link-local address a kernel with EUI-64 address generation forms
    from an interface's MAC (RFC 4291 appendix A): fe80:: plus the MAC with
    ff:fe in its middle and the universal/local bit flipped."""
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui)


# Addresses as the data plane keys them (VTEPs, neighbours, conntrack,
# policy ranges): 128 bits, IPv4 mapped to ::ffff:a.b.c.d (_underlay.pxd).
IPV4_MAPPED = (0xFFFF << 32, 0xFFFF << 32 | 0xFFFFFFFF)     # ::ffff:0:0/96, first and last
ALL_ADDRESSES = (0, (1 << 128) - 1)


def address_key(ip) -> int:
    ip = ipaddress.ip_address(ip)
    return int(ip) | IPV4_MAPPED[0] if ip.version == 4 else int(ip)


def address_str(key: int) -> str:
    ip = ipaddress.IPv6Address(key)
    return str(ip.ipv4_mapped or ip)

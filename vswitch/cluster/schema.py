"""The cluster's records: where each kind lives under the prefix, and what
a valid one holds. The one place the key layout is written (the README's
"What is in etcd" shows it to operators).

    networks/NAME           {"vni", "mtu", "gateway", "masquerade", ["subnet",
                             "block_size"], ["subnet6", "block_size6"]}     no lease
    vnis/VNI                "NAME" (one network per VNI)                     no lease
    nodes/NAME              {"vtep", "version", "started", "lease"}          the node's lease
    blocks/NET/ADDR-LEN     {"node", "claimed"} (IPv4 or IPv6 blocks)        no lease
    endpoints/NET/IP        {"mac", "node", "pod"}                           the node's lease
    graves/NAME             {"since"}                                        a grace-period lease
    policies/NS/NAME        a NetworkPolicy manifest                         no lease
    namespaces/NS           {"labels"}                                       no lease

An endpoint's "pod" is who the pod is for NetworkPolicy (namespace, name,
labels, named ports): other nodes match their policies' selectors on it."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from ..config import NetworkConfig, node_address
from ..ipam import Block
from ..protocol import MAX_NETWORK_MTU, MIN_MTU

DEFAULT_BLOCK_SIZE6 = 122               # IPv6 blocks of 64 addresses, as Calico's
# The kinds of record a node follows, and how many key parts name one.
PARTS = {"networks": 1, "nodes": 1, "endpoints": 2, "blocks": 2, "graves": 1,
         "policies": 2, "namespaces": 1}


@dataclass(frozen=True)
class Change:
    """One record as a source saw it: kind, the key parts that name it, and
    its value (None: gone)."""
    kind: str
    name: tuple[str, ...]
    value: bytes | None


class Keys:
    """Key names under a prefix."""

    def __init__(self, prefix: str):
        self.prefix = prefix.rstrip("/") + "/"

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def block(self, network: str, block: Block) -> str:
        return self.key("blocks", network, block_key_part(block))

    def change(self, key: str, value: bytes | None) -> Change | None:
        """What a key is, if it is one of the records a node follows."""
        parts = key[len(self.prefix):].split("/")
        if PARTS.get(parts[0]) != len(parts) - 1:
            return None             # not ours (another tool's keys under the prefix)
        return Change(parts[0], tuple(parts[1:]), value)


def parse_json(value: bytes):
    """A record's JSON, or None: not JSON, or nested beyond what the
    parser recurses into (RecursionError), whatever a writer put there."""
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


def block_key_part(block: Block) -> str:
    return f"{block.network_address}-{block.prefixlen}"


def block_of_key_part(part: str) -> Block:
    """The block a record's key names (ValueError if it names none)."""
    return ipaddress.ip_network(part.replace("-", "/"))


def network_from_record(name: str, rec) -> NetworkConfig:
    """A network record from etcd as the config's NetworkConfig (its block
    is the whole subnet: nodes claim blocks of block_size inside it; a
    network has an IPv4 subnet, an IPv6 one, or both); ValueError if it is
    malformed."""
    if not isinstance(rec, dict):
        raise ValueError("not an object")
    vni, mtu = rec["vni"], rec["mtu"]
    if not all(isinstance(v, int) for v in (vni, mtu)) or not 0 < vni <= 0xFFFFFF \
            or not MIN_MTU <= mtu <= MAX_NETWORK_MTU:
        raise ValueError(f"bad vni or mtu in {rec}")
    if not all(isinstance(rec.get(k, False), bool) for k in ("gateway", "masquerade")):
        raise ValueError(f"gateway and masquerade must be true or false in {rec}")
    subnet = size = subnet6 = size6 = None
    if rec.get("subnet") is not None:
        subnet, size = ipaddress.IPv4Network(rec["subnet"]), rec["block_size"]
        if not isinstance(size, int) or not subnet.prefixlen <= size <= 30:
            raise ValueError(f"bad block_size in {rec}: between subnet's prefix and 30")
    if rec.get("subnet6") is not None:
        subnet6, size6 = ipaddress.IPv6Network(rec["subnet6"]), \
            rec.get("block_size6", DEFAULT_BLOCK_SIZE6)
        if not isinstance(size6, int) or not subnet6.prefixlen <= size6 <= 126 or \
                (size is not None and 2 ** (128 - size6) < 2 ** (32 - size)):
            raise ValueError(f"bad block_size6 in {rec}: between subnet6's prefix and 126, "
                             "with as many addresses as an IPv4 block")
    if subnet is None and subnet6 is None:
        raise ValueError("a subnet (IPv4), a subnet6 (IPv6) or both are required")
    return NetworkConfig(name, vni, subnet, subnet, mtu, block_size=size, subnet6=subnet6,
                         block6=subnet6, block_size6=size6)


def family(net: NetworkConfig, version: int) -> tuple[Block | None, int | None]:
    """A cluster network's subnet and block size in one family."""
    return net.subnet_of(version), net.block_size if version == 4 else net.block_size6


def fits(block: Block, net: NetworkConfig) -> bool:
    """Whether block is one of net's (its family's subnet and block size)."""
    subnet, size = family(net, block.version)
    return subnet is not None and block.prefixlen == size and \
        block.subnet_of(subnet)  # type: ignore[arg-type]


def vtep_of(rec) -> str | None:
    """A node record's VTEP, if it is a unicast address a node can have."""
    try:
        address = ipaddress.ip_address(rec.get("vtep"))
    except (ValueError, AttributeError):
        return None
    return str(address) if node_address(address) else None

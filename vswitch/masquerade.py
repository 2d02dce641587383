"""Egress masquerade: pods reach destinations outside every cluster subnet
through the node's own stack, source-NATed to the node's address, as
flannel's --ip-masq and Calico's natOutgoing do. Traffic between pods, and
from pods to the node, keeps its real source (Kubernetes requires it).

The rules live in tables of vswitch's own, `ip vswitch` (and `ip6
vswitch` for dual-stack networks), rewritten whole
in one transaction whenever the networks change (start, reload, cluster
networks) and deleted when vswitchd stops (without it pods go nowhere;
after a SIGKILL the next start rewrites them). Nothing else's rules are
touched."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .config import NetworkConfig
from .nftables import Nftables, NftError

log = logging.getLogger("vswitch.masquerade")

TABLE = "vswitch"


def ruleset(networks: Iterable[NetworkConfig]) -> str:
    """The nft script that makes the tables hold the rules for these
    networks, and only them (no table at all for a family in which none
    masquerades)."""
    networks = list(networks)
    script = []
    for family, subnet in (("ip", "subnet"), ("ip6", "subnet6")):
        script += [f"table {family} {TABLE} {{}}", f"delete table {family} {TABLE}"]  # now gone
        masquerading = [n for n in networks if n.masquerade and getattr(n, subnet)]
        if not masquerading:
            continue
        cluster = ", ".join(sorted({str(getattr(n, subnet)) for n in networks
                                    if getattr(n, subnet)}))
        script += [f"table {family} {TABLE} {{",
                   "  chain postrouting {",
                   "    type nat hook postrouting priority srcnat; policy accept;"]
        script += [f'    {family} saddr {getattr(n, subnet)} {family} daddr != {{ {cluster} }} '
                   f'masquerade comment "network {n.name}"' for n in masquerading]
        script += ["  }", "}"]
    return "\n".join(script) + "\n"


class Masquerade:
    def __init__(self):
        self._nft: Nftables | None = None
        self.rules: list[str] = []          # networks masqueraded now, for status
        self.error: str | None = None

    @property
    def nft(self) -> Nftables:
        if self._nft is None:
            self._nft = Nftables()
        return self._nft

    def apply(self, networks: Iterable[NetworkConfig]):
        """Make the table match the networks (a table a killed vswitchd
        left goes too); a failure is logged and shown in status (pods then
        do not reach outside), never fatal. Without libnftables, only a
        network that wants masquerade is an error."""
        networks = list(networks)
        wanted = [n.name for n in networks if n.masquerade]
        try:
            self.nft.run(ruleset(networks))
            self.rules, self.error = wanted, None
            log.info("masquerade: %s", ", ".join(wanted) or "none")
        except NftError as e:
            self.rules, self.error = [], str(e) if wanted else None
            if wanted:
                log.error("masquerade rules not set: %s", e)

    def remove(self):
        self.apply([])

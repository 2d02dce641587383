"""An example capture hook: log every ICMP message a pod sends or receives,
decoded with scapy, with the port and capture point it was seen at.

Attach it in the vswitchd config (the daemon calls it in a thread of its
own; a hook that raises is logged once and disabled):

    [[hook]]
    call = "/path/to/examples/hooks/trace_icmp.py:hook"
    point = ["ingress", "egress", "drop"]
    filter = "icmp"              # tcpdump syntax, applied in the fast path
    # port = "pod-a"             # only this port

Each call gets (point, port, frame bytes, metadata: ts_ns, point, port,
reason (for drops), orig_len).
"""

import logging

from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether

log = logging.getLogger("vswitch.hook.trace_icmp")


def hook(point, port, frame, meta):
    packet = Ether(frame)
    if ICMP not in packet:
        return
    why = f" ({meta['reason']})" if meta["reason"] else ""
    log.info("%-7s %s%s: %s > %s %s", point, port, why, packet[IP].src, packet[IP].dst,
             packet[ICMP].sprintf("%ICMP.type%"))

"""Several forwarding threads on shared tables, under churn: frames from
several sender threads into every queue of every port, while the control
plane adds and removes ports, swaps policies, adds and removes peers and
neighbours and flushes the FDB. At the end every frame read is accounted
for: delivered (once, or flooded) or dropped with a reason, and every copy
counted as written was received. The checked build (ASan, UBSan) runs this
too (scripts/checked_build.py)."""

from __future__ import annotations

import random
import socket
import threading
import time

from datapath_rig import BCAST, Rig, mac
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from vswitch.encap import VXLAN
from vswitch.protocol import address_key

WORKERS = 4
STABLE = 6                          # ports that send, and stay
SENDERS = 3                         # threads writing frames
FRAMES = 2000                       # in a sender thread's plan (sent over and over)
CHANGES = 600                       # by the control plane, while frames flow
ROAMING = mac(0x777)                # a MAC that moves between ports all the time


def address(i: int) -> str:
    return f"198.18.2.{i + 1}"


def frames_for(rng: random.Random, src_port: int) -> bytes:
    """One frame from stable port src_port: unicast to another pod, a
    broadcast, a roaming source, or an ARP request the switch may answer."""
    kind = rng.random()
    dst = rng.randrange(STABLE)
    src_mac = ROAMING if kind < 0.1 else mac(src_port + 1)
    if kind < 0.7:
        return bytes(Ether(src=src_mac.hex(":"), dst=mac(dst + 1).hex(":")) /
                     IP(src=address(src_port), dst=address(dst)) /
                     UDP(sport=1000 + rng.randrange(50), dport=53) / (b"x" * 20))
    if kind < 0.9:
        return bytes(Ether(src=src_mac.hex(":"), dst=BCAST.hex(":")) /
                     IP(src=address(src_port), dst="198.18.2.255") / UDP(sport=1, dport=2))
    return bytes(Ether(src=mac(src_port + 1).hex(":"), dst=BCAST.hex(":")) /
                 ARP(op=1, hwsrc=mac(src_port + 1).hex(":"), psrc=address(src_port),
                     pdst=f"198.18.3.{rng.randrange(1, 20)}"))


def tunnel_sockets(workers: int):
    """A VTEP on 127.0.0.1: a receiving socket per worker, a sender each."""
    rx = []
    for _ in range(workers):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", rx[0].getsockname()[1] if rx else 0))
        s.setblocking(False)
        rx.append(s)
    tx = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(workers)]
    for s in tx:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    return rx, tx


def test_workers_under_churn_account_for_every_frame():
    rig = Rig(workers=WORKERS, start=False)
    dp = rig.dp
    rx, tx = tunnel_sockets(WORKERS)
    try:
        dp.set_tunnel([s.fileno() for s in rx], [[(s.fileno(), s.getsockname()[1])] for s in tx],
                      rx[0].getsockname()[1], 1500, VXLAN.outer_overhead(4), False,
                      address_key("127.0.0.1"), 0)
        dp.start()
        stable = [rig.port(1) for _ in range(STABLE)]
        sent = [0] * SENDERS

        def plan(k: int):
            rng = random.Random(k)
            for _ in range(FRAMES):
                src = rng.randrange(STABLE)
                yield rig.pods[stable[src]][rng.randrange(WORKERS)], frames_for(rng, src)

        plans = [list(plan(k)) for k in range(SENDERS)]

        enough = threading.Event()

        def send(k: int):
            while True:                     # the plan over and over, until the churn is done
                for pod, frame in plans[k]:
                    try:
                        pod.send(frame)
                        sent[k] += 1
                    except BlockingIOError:  # the switch is behind: the frame was never written
                        time.sleep(0.0005)
                if enough.is_set():
                    return

        senders = [threading.Thread(target=send, args=(k,)) for k in range(SENDERS)]
        for t in senders:
            t.start()
        churn, changes = [], 0
        rng = random.Random(99)
        while changes < CHANGES:
            step = changes % 6
            if step == 0:
                churn.append(rig.port(1))
            elif step == 1 and churn:
                dp.remove_port(churn.pop(0))
            elif step == 2:
                victim = stable[rng.randrange(STABLE)]
                dp.set_port_policy(victim, ingress=(1, []) if rng.random() < 0.5 else None)
                dp.policy_changed()
            elif step == 3:
                peer = address_key(f"127.0.0.{rng.randrange(10, 20)}")
                if rng.random() < 0.5:
                    dp.add_peer(peer, 1)
                else:
                    dp.remove_peer(peer)
            elif step == 4:
                target = address_key(f"198.18.3.{rng.randrange(1, 20)}")
                if rng.random() < 0.5:
                    dp.neigh_set(1, target, 0x0A0000000000 + rng.randrange(1, 1000))
                else:
                    dp.neigh_delete(1, target)
            else:
                dp.fdb_flush(1)
            dp.reclaim()
            changes += 1
        enough.set()
        for t in senders:
            t.join()
        total = sum(sent)
        deadline = time.monotonic() + 30
        while rig.switched() < total:
            assert time.monotonic() < deadline, f"switched {rig.switched()} of {total}"
            time.sleep(0.01)
        time.sleep(0.05)             # the last round's flush
        c = dp.counters()
        ports = {p: dp.port_counters(p) for p in stable}
        # Every frame written was read, and had one fate.
        assert sum(p["rx_packets"] for p in ports.values()) == total
        assert c["unicast"] + c["flooded"] + c["arp_suppressed"] + \
            sum(p["rx_dropped"] for p in ports.values()) == total
        # Every copy counted as written to a stable port is there.
        for p, counts in ports.items():
            assert len(rig.received(p)) == counts["tx_packets"], p
        # The threads shared the work, and the control plane's changes happened under it.
        per_worker = [w["frames"] for w in dp.worker_counters()]
        assert all(n > 0 for n in per_worker), per_worker
        assert c["fdb"]["moves"] > 0 and c["arp_suppressed"] > 0
        assert c["drops"]["policy_denied"] > 0
        # The FDB names only ports and peers that exist.
        live = set(stable) | set(churn)
        peers = {ip for ip, *_ in dp.peer_list()}
        for _net, _mac, port, peer, *_ in dp.fdb_entries():
            assert port in live if peer is None else peer in peers
    finally:
        rig.close()
        for s in rx + tx:
            s.close()

"""One pipeline: a trace runs the switch's own pipeline with a sink, so its
verdict and output ports are what the switch then really does, on any
frame and any tables; and a trace changes nothing (no learning, counting or
connection tracked)."""

from __future__ import annotations

from datapath_rig import BCAST, Rig, mac
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from vswitch.protocol import address_key

ADDR = {n: f"198.18.2.{n}" for n in range(1, 6)}
SECURED, POLICED = 0, 2          # port 0 is bound to mac(1) and ADDR[1]; port 2 has a policy


def switch(seed_macs: list[tuple[int, int]]) -> Rig:
    """Ports 0-3 in network 1 (0 port-secured, 2 selected by a policy
    letting in only TCP to port 80 from ADDR[1]), port 4 in network 2;
    seed_macs: (port, MAC number) learned before the frames."""
    rig = Rig()
    for net in (1, 1, 1, 1, 2):
        rig.port(net)
    rig.dp.set_port_security(SECURED, mac=int.from_bytes(mac(1), "big"),
                             ips=[address_key(ADDR[1]) & 0xFFFFFFFF])
    a = address_key(ADDR[1])
    rig.dp.set_port_policy(POLICED, ingress=(9, [([(a, a, 9)], [(6, 80, 80)])]))
    for port, n in seed_macs:
        if port != SECURED:
            rig.send(port, bytes(Ether(dst=BCAST, src=mac(n)) / IP()))
    for p in range(5):
        rig.received(p)
    return rig


def frame(dst: int, src: int, address: int, l4: str, size: int) -> bytes:
    """dst/src: MAC numbers (0: broadcast; 0x100: a multicast source)."""
    src_mac = b"\x01\x00\x5e\x00\x00\x01" if src == 0x100 else mac(src)
    l4_part = TCP(dport=80, flags="S") if l4 == "tcp80" else \
        TCP(dport=22, flags="S") if l4 == "tcp22" else UDP(dport=53)
    f = bytes(Ether(dst=BCAST if dst == 0 else mac(dst), src=src_mac)
              / IP(src=ADDR[address], dst=ADDR[2]) / l4_part)
    return f[:size] if size < len(f) else f + bytes(size - len(f))


def predicted(steps: list[dict]) -> tuple[str | None, set[int]]:
    """A trace's verdict: the frame's drop reason, or None and the ports
    its copies are written to."""
    whole = [s for s in steps if s["step"] == "drop" and "port" not in s]
    if whole:
        return whole[-1]["reason"], set()
    out = next((s for s in steps if s["step"] in ("output", "flood")), {"ports": []})
    refused = {s["to"] for s in steps if s["step"] == "policy" and s["verdict"] != "pass"}
    dropped = {s["port"] for s in steps if s["step"] == "drop"}
    return None, set(out["ports"]) - refused - dropped


def tables(rig: Rig) -> tuple:
    """What a trace must leave as it was: the FDB (but its entries' age),
    the counters, the connections."""
    fdb = [e[:4] + e[5:] for e in rig.dp.fdb_entries()]
    return fdb, rig.dp.counters(), [c[:7] + c[8:] for c in rig.dp.conntrack_entries()]


def drops(rig: Rig) -> dict[str, int]:
    return {k: v for k, v in rig.dp.counters()["drops"].items() if v}


frames = st.lists(st.tuples(
    st.integers(0, 4),                          # ingress port
    st.sampled_from([0, 1, 2, 3, 4, 5]),        # destination MAC (0: broadcast)
    st.sampled_from([1, 2, 3, 4, 5, 0x100]),    # source MAC (0x100: multicast)
    st.integers(1, 5),                          # IPv4 source address
    st.sampled_from(["tcp80", "tcp22", "udp"]),
    st.sampled_from([10, 60, 1514, 1515])),     # frame length (runt .. oversize)
    min_size=1, max_size=25)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(2, 5)), max_size=4), frames)
def test_the_trace_says_what_the_pipeline_does(seed_macs, conversation):
    rig = switch(seed_macs)
    for port, dst, src, address, l4, size in conversation:
        f = frame(dst, src, address, l4, size)
        state = tables(rig)
        steps = rig.dp.trace(port, f)
        assert tables(rig) == state, "a trace changed the switch"
        reason, ports = predicted(steps)
        before = drops(rig)
        rig.send(port, f)
        got = {p for p in range(5) if rig.received(p)}
        assert got == ports, (steps, got)
        if reason is not None:
            assert drops(rig).get(reason, 0) > before.get(reason, 0), (steps, drops(rig))


def test_the_trace_names_a_rate_limit():
    rig = Rig()
    a, b = rig.port(), rig.port()
    rig.dp.set_port_rates(a, ingress_bps=8_000, ingress_burst=8)     # a 65,536-byte bucket
    f = bytes(Ether(dst=mac(2), src=mac(1)) / IP() / UDP()).ljust(1400, b"\0")
    while True:                                 # empty the bucket
        rig.send(a, f)
        if drops(rig).get("rate_limited"):
            break
    steps = rig.dp.trace(a, f)
    assert {"step": "rate_limit", "direction": "ingress", "port": a,
            "verdict": "rate_limited"} in steps
    assert steps[-1] == {"step": "drop", "reason": "rate_limited"}
    assert rig.dp.trace(b, bytes(Ether(dst=mac(9), src=mac(2)) / IP()))[-1] == \
        {"step": "flood", "ports": [a], "peers": []}

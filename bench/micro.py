#!/usr/bin/env python3
"""The fast path's per-frame cost without syscalls, and how it scales.

The Cython pipeline's own decision functions (ingress checks, learning, FDB
lookup; `datapath.pipeline_cost`) run over 64-byte frames in memory, with
the FDB holding 1k, 100k and 1M MACs; the same logic written in pure Python
(dict + struct) and with scapy parsing runs over the same frames, so the
gain is shown. The same for the tunnel path: VXLAN encapsulation (header,
flow hash, datagram set-up; `encap_cost`), decapsulation checks
(`decap_cost`) and cutting a 64 KB TCP superframe into segments with full
checksums (`segment_cost`). Also: flooding cost against the number of ports
(real writes to socketpairs), and an established packet's conntrack lookup
among 1k, 100k and 1M connections of each family (`conntrack_cost`; the
goal is under 50 ns at 1M) with the table's memory per connection. No root needed. Run:
    python3 bench/micro.py [--json FILE]
bench/test_micro_benchmark.py runs the same functions under pytest-benchmark.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import socket
import struct
import sys
import time

from vswitch.datapath import (
    Datapath,
    address_key,
    conntrack_cost,
    decap_cost,
    encap_cost,
    learn_sources,
    new_datapath,
    pipeline_cost,
    segment_cost,
)

FRAME_LEN = 64
AGING_NS = 300 * 10**9


def mac(i: int) -> bytes:
    return struct.pack("!HI", 0x0200, i)


def frames_for(n_macs: int, count: int, seed: int = 1) -> bytes:
    """count frames between random pairs of n_macs unicast MACs."""
    rng = random.Random(seed)
    out = bytearray()
    for _ in range(count):
        src, dst = rng.randrange(n_macs), rng.randrange(n_macs)
        out += mac(dst) + mac(src) + b"\x08\x00" + bytes(FRAME_LEN - 14)
    return bytes(out)


def bench_datapath(**settings) -> Datapath:
    """The daemon's data plane, but that one port may learn every MAC of
    the table, nothing busy-polls, and one worker is driven by hand."""
    return new_datapath(**{"fdb_max_per_port": 0, "fdb_max_per_peer": 0, "busy_poll_us": 0,
                           "workers": 1, **settings})


def learn_all(dp: Datapath, port: int, n_macs: int):
    step = 100_000
    for base in range(0, n_macs, step):
        chunk = bytearray()
        for i in range(base, min(base + step, n_macs)):
            chunk += mac(i) + mac(i) + b"\x08\x00" + bytes(FRAME_LEN - 14)
        learn_sources(dp, port, bytes(chunk), FRAME_LEN)


def cython_ns(n_macs: int, frames: bytes) -> float:
    dp = bench_datapath(fdb_max_entries=max(2 * n_macs, 1024))
    dp.set_network(1, 1, 1500)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    port = dp.add_port(ours.fileno(), 1)
    learn_all(dp, port, n_macs)
    count = len(frames) // FRAME_LEN
    best = min(pipeline_cost(dp, port, frames, FRAME_LEN, 5)[0] / (5 * count) for _ in range(3))
    ours.close(), theirs.close()
    return best


def python_pipeline(frames: bytes, fdb: dict, port: int, now: int) -> int:
    """The same decisions in idiomatic Python: parse with struct, dict FDB."""
    decisions = 0
    for off in range(0, len(frames), FRAME_LEN):
        f = frames[off:off + FRAME_LEN]
        if len(f) < 14:
            continue
        dst, src = f[0:6], f[6:12]
        (ethertype,) = struct.unpack_from("!H", f, 12)
        l2 = 18 if ethertype in (0x8100, 0x88A8) else 14
        if len(f) < l2 or len(f) - l2 > 1500 or src[0] & 1:
            continue
        fdb[src] = (port, now)
        if dst[0] & 1:
            decisions -= 1
            continue
        entry = fdb.get(dst)
        decisions += entry[0] if entry and now - entry[1] < AGING_NS else -1
    return decisions


def scapy_pipeline(frames: bytes, fdb: dict, port: int, now: int) -> int:
    from scapy.layers.l2 import Ether
    decisions = 0
    for off in range(0, len(frames), FRAME_LEN):
        pkt = Ether(frames[off:off + FRAME_LEN])
        fdb[pkt.src] = (port, now)
        entry = fdb.get(pkt.dst)
        decisions += entry[0] if entry and now - entry[1] < AGING_NS else -1
    return decisions


def python_ns(fn, n_macs: int, frames: bytes) -> float:
    fdb = {mac(i): (0, time.monotonic_ns()) for i in range(n_macs)}
    if fn is scapy_pipeline:
        fdb = {":".join(f"{b:02x}" for b in k): v for k, v in fdb.items()}
    count = len(frames) // FRAME_LEN
    start = time.perf_counter_ns()
    fn(frames, fdb, 0, time.monotonic_ns())
    return (time.perf_counter_ns() - start) / count


VNI, PEER_IP = 42, address_key("10.0.0.1")
SENDER_PORTS = list(range(49152, 49152 + 16))


def flow_frames(count: int, frame_len: int = FRAME_LEN) -> bytes:
    """UDP/IPv4 frames of count different flows."""
    out = bytearray()
    for i in range(count):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, frame_len - 14, 0, 0, 64, 17, 0,
                         bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
        udp = struct.pack("!HHHH", 1024 + i % 60000, 5201, frame_len - 34, 0)
        out += mac(2) + mac(1) + b"\x08\x00" + ip + udp + bytes(frame_len - 42)
    return bytes(out)


def vxlan_datagrams(frames: bytes, frame_len: int = FRAME_LEN) -> bytes:
    header = struct.pack("!II", 0x08000000, VNI << 8)
    return b"".join(header + frames[i:i + frame_len] for i in range(0, len(frames), frame_len))


def python_encap(frames: bytes, frame_len: int = FRAME_LEN) -> int:
    """Encapsulation in idiomatic Python: header, flow hash, datagram."""
    header = struct.pack("!II", 0x08000000, VNI << 8)
    total = 0
    for off in range(0, len(frames), frame_len):
        f = frames[off:off + frame_len]
        flow = f[0:14] + f[26:38] if f[12:14] == b"\x08\x00" else f[0:14]
        sport = SENDER_PORTS[hash(flow) % len(SENDER_PORTS)]
        datagram = header + f
        total += len(datagram) + sport
    return total


def scapy_encap(frames: bytes, frame_len: int = FRAME_LEN) -> int:
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN
    return sum(len(bytes(VXLAN(vni=VNI) / Ether(frames[off:off + frame_len])))
               for off in range(0, len(frames), frame_len))


def python_decap(datagrams: bytes, length: int, peers=frozenset([PEER_IP]),
                 networks=None) -> int:
    networks = networks or {VNI: 1}
    accepted = 0
    for off in range(0, len(datagrams), length):
        if PEER_IP not in peers:
            continue
        flags, word = struct.unpack_from("!II", datagrams, off)
        if flags == 0x08000000 and not word & 0xFF and (word >> 8) in networks:
            accepted += 1
    return accepted


def scapy_decap(datagrams: bytes, length: int) -> int:
    from scapy.layers.vxlan import VXLAN
    accepted = 0
    for off in range(0, len(datagrams), length):
        v = VXLAN(datagrams[off:off + length])
        accepted += v.flags == 0x08 and v.vni == VNI
    return accepted


MSS = 1398


def superframe(payload_len: int = 65000) -> bytes:
    """virtio_net_hdr + a TCP/IPv4 superframe with a partial checksum."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0xFFFF, 1000, 0x4000, 64, 6, 0,
                     bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 123456, 1, 0x50, 0x18, 512, 0, 0)
    vnet = struct.pack("<BBHHHH", 1, 1, 54, MSS, 34, 16)
    return vnet + mac(2) + mac(1) + b"\x08\x00" + ip + tcp + bytes(range(256)) * (payload_len // 256)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def python_segment(sf: bytes) -> int:
    """Segmentation in idiomatic Python: per segment, patched headers and
    checksums computed with struct."""
    _, _, _, mss, l4, _ = struct.unpack_from("<BBHHHH", sf)
    frame = sf[10:]
    hlen = l4 + (frame[l4 + 12] >> 4) * 4
    (seq,) = struct.unpack_from("!I", frame, l4 + 4)
    segments = []
    for i, off in enumerate(range(hlen, len(frame), mss)):
        payload = frame[off:off + mss]
        h = bytearray(frame[:hlen])
        struct.pack_into("!HH", h, 16, hlen - 14 + len(payload), (1000 + i) & 0xFFFF)
        struct.pack_into("!H", h, 24, 0)
        struct.pack_into("!H", h, 24, _csum(bytes(h[14:34])))
        struct.pack_into("!I", h, l4 + 4, (seq + i * mss) & 0xFFFFFFFF)
        struct.pack_into("!H", h, l4 + 16, 0)
        pseudo = bytes(h[26:34]) + struct.pack("!HH", 6, hlen - l4 + len(payload))
        struct.pack_into("!H", h, l4 + 16, _csum(pseudo + bytes(h[l4:hlen]) + payload))
        segments.append((bytes(h), payload))
    return len(segments)


def scapy_segment(sf: bytes) -> int:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    pkt = Ether(sf[10:])
    data = bytes(pkt[TCP].payload)
    count = 0
    for i, off in enumerate(range(0, len(data), MSS)):
        seg = Ether(src=pkt.src, dst=pkt.dst) / IP(src=pkt[IP].src, dst=pkt[IP].dst, id=1000 + i) / \
            TCP(sport=pkt[TCP].sport, dport=pkt[TCP].dport, seq=pkt[TCP].seq + i * MSS,
                ack=pkt[TCP].ack, flags="A") / Raw(data[off:off + MSS])
        count += len(bytes(seg)) > 0
    return count


def tunnel_dp() -> Datapath:
    dp = bench_datapath()
    dp.set_network(1, VNI, 1500)
    dp.add_peer(PEER_IP, 1)
    return dp


def timed_ns(fn, *args, repeat: int = 3) -> float:
    best = None
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn(*args)
        elapsed = time.perf_counter_ns() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def tunnel_costs(count: int) -> dict:
    """ns per frame (encap, decap) and per 64 KB superframe (segmentation)."""
    dp = tunnel_dp()
    frames = flow_frames(count)
    datagrams = vxlan_datagrams(frames)
    dlen = FRAME_LEN + 8
    sf = superframe()
    few = max(1, count // 100)
    segments = segment_cost(sf)[1]
    return {
        "encap_ns": {"cython": min(encap_cost(dp, 1, frames, FRAME_LEN, 3) / 3 for _ in range(3)) / count,
                     "python": timed_ns(python_encap, frames) / count,
                     "scapy": timed_ns(scapy_encap, frames[:few * FRAME_LEN], repeat=1) / few},
        "decap_ns": {"cython": min(decap_cost(dp, PEER_IP, datagrams, dlen, 3)[0] / 3
                                   for _ in range(3)) / count,
                     "python": timed_ns(python_decap, datagrams, dlen) / count,
                     "scapy": timed_ns(scapy_decap, datagrams[:few * dlen], dlen, repeat=1) / few},
        "segment_ns": {"cython": min(segment_cost(sf, 20)[0] / 20 for _ in range(3)),
                       "python": timed_ns(python_segment, sf),
                       "scapy": timed_ns(scapy_segment, sf, repeat=1),
                       "segments": segments},
    }


def flood_ns(n_ports: int, rounds: int = 200) -> float:
    """One broadcast frame drained from a port and written to n_ports - 1
    others (socketpairs): the cost of a flood, syscalls included."""
    dp = bench_datapath(batch=64)
    dp.set_network(1, 1, 1500)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(n_ports)]
    for ours, theirs in pairs:
        ours.setblocking(False)
        theirs.setblocking(False)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    ports = [dp.add_port(ours.fileno(), 1) for ours, _ in pairs]
    frame = b"\xff" * 6 + mac(1) + b"\x08\x00" + bytes(FRAME_LEN - 14)
    total = 0
    for _ in range(rounds):
        pairs[0][1].send(frame)
        start = time.perf_counter_ns()
        dp.drain(ports[0])
        total += time.perf_counter_ns() - start
        for _, theirs in pairs[1:]:
            theirs.recv(2048)
    for ours, theirs in pairs:
        ours.close(), theirs.close()
    return total / rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--frames", type=int, default=200_000, help="frames per measurement")
    args = parser.parse_args()
    # Two descriptors per flooded port: lift the soft limit to the hard one.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = {"per_frame_ns": {}, "flood_ns": {}}
    print(f"per-frame cost without syscalls (checks + learn + lookup), "
          f"{FRAME_LEN}-byte frames, ns/frame")
    print(f"{'FDB MACs':>10} {'Cython':>9} {'Python':>9} {'scapy':>9} {'Python/Cython':>14}")
    for n_macs in (1_000, 100_000, 1_000_000):
        frames = frames_for(n_macs, args.frames)
        row = {"cython": cython_ns(n_macs, frames),
               "python": python_ns(python_pipeline, n_macs, frames)}
        if n_macs == 1_000:
            row["scapy"] = python_ns(scapy_pipeline, n_macs, frames[:FRAME_LEN * 20_000])
        results["per_frame_ns"][n_macs] = row
        scapy = f"{row['scapy']:9.0f}" if "scapy" in row else f"{'-':>9}"
        print(f"{n_macs:>10} {row['cython']:9.1f} {row['python']:9.0f} {scapy} "
              f"{row['python'] / row['cython']:13.0f}x")
    tunnel = tunnel_costs(min(args.frames, 100_000))
    results.update(tunnel)
    print(f"\ntunnel path without syscalls, ns ({FRAME_LEN}-byte frames; segmentation: "
          f"one 64 KB superframe into {tunnel['segment_ns']['segments']} segments)")
    print(f"{'':>12} {'Cython':>10} {'Python':>10} {'scapy':>12} {'Python/Cython':>14}")
    for key, title in (("encap_ns", "encap"), ("decap_ns", "decap"), ("segment_ns", "segment")):
        row = tunnel[key]
        print(f"{title:>12} {row['cython']:10.1f} {row['python']:10.0f} {row['scapy']:12.0f} "
              f"{row['python'] / row['cython']:13.0f}x")
    print("\nflooding one frame (drain + writes to every other port), us")
    for n_ports in (2, 16, 128, 512):
        results["flood_ns"][n_ports] = flood_ns(n_ports)
        print(f"{n_ports:>5} ports {results['flood_ns'][n_ports] / 1000:9.1f}")
    print("\nconntrack among N connections: an established packet's lookup (key and lookup),"
          " and with\nits entry's update (state, deadline), ns (best of 3 runs of 2M packets);"
          " table bytes per connection")
    for family, suffix in (("IPv4", ""), ("IPv6", "6")):
        ns, update_ns, per_flow = {}, {}, {}
        for flows in (1_000, 100_000, 1_000_000):
            runs = [conntrack_cost(flows, 2_000_000, bool(suffix)) for _ in range(3)]
            assert all(r[2] == 2_000_000 for r in runs), "every lookup must find its connection"
            ns[flows] = min(r[0] for r in runs) / 2_000_000
            update_ns[flows] = min(r[1] for r in runs) / 2_000_000
            per_flow[flows] = runs[0][3]
            print(f"{family} {flows:>10,} {ns[flows]:9.1f} ns {update_ns[flows]:9.1f} ns "
                  f"{per_flow[flows]:7.0f} B")
        results[f"conntrack{suffix}_ns"] = ns
        results[f"conntrack{suffix}_update_ns"] = update_ns
        results[f"conntrack{suffix}_bytes_per_flow"] = per_flow
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

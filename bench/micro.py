#!/usr/bin/env python3
"""The fast path's per-frame cost without syscalls, and how it scales.

The Cython pipeline's own decision functions (ingress checks, learning, FDB
lookup; `Datapath.pipeline_cost`) run over 64-byte frames in memory, with
the FDB holding 1k, 100k and 1M MACs; the same logic written in pure Python
(dict + struct) and with scapy parsing runs over the same frames, so the
gain is shown. Also: flooding cost against the number of ports (real
writes to socketpairs). No root needed. Run:
    python3 bench/micro.py [--json FILE]
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

from vswitch._fastpath import Datapath

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


def learn_all(dp: Datapath, port: int, n_macs: int):
    step = 100_000
    for base in range(0, n_macs, step):
        chunk = bytearray()
        for i in range(base, min(base + step, n_macs)):
            chunk += mac(i) + mac(i) + b"\x08\x00" + bytes(FRAME_LEN - 14)
        dp.pipeline_cost(port, bytes(chunk), FRAME_LEN)


def cython_ns(n_macs: int, frames: bytes) -> float:
    dp = Datapath(fdb_max_entries=max(2 * n_macs, 1024))
    dp.set_network(1, 1, 1500)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    port = dp.add_port(ours.fileno(), 1)
    learn_all(dp, port, n_macs)
    count = len(frames) // FRAME_LEN
    best = min(dp.pipeline_cost(port, frames, FRAME_LEN, 5)[0] / (5 * count) for _ in range(3))
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


def flood_ns(n_ports: int, rounds: int = 200) -> float:
    """One broadcast frame drained from a port and written to n_ports - 1
    others (socketpairs): the cost of a flood, syscalls included."""
    dp = Datapath(batch=64)
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
    print("\nflooding one frame (drain + writes to every other port), us")
    for n_ports in (2, 16, 128, 512):
        results["flood_ns"][n_ports] = flood_ns(n_ports)
        print(f"{n_ports:>5} ports {results['flood_ns'][n_ports] / 1000:9.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

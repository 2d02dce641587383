#!/usr/bin/env python3
"""vswitchd at scale: daemon memory (RSS) idle, with 1,000 ports and with
1,000,000 learned MACs, and how long `port add` takes at 10 and at 1,000
ports. The ports are TAPs in one namespace (eth0..eth999); the MACs are
learned from frames with distinct source addresses sent by a pod whose port
has no port security. Run as root:
    python3 bench/scale.py [--ports 1000] [--macs 1000000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

from topology import namespaces, sh
from workload import rss_mb


def daemon_pid(sock: str) -> int:
    """The vswitchd serving on sock (the python process, not a wrapper)."""
    out = sh("ss", "-xlpn")
    for line in out.splitlines():
        if sock in line and "pid=" in line:
            return int(line.split("pid=")[1].split(",")[0])
    raise RuntimeError("vswitchd not found")


def learn_macs(pod: str, count: int):
    """count frames from distinct source MACs out of the pod's eth0, all to
    one MAC learned on that same port: each is learned, then dropped as a
    loop, instead of being flooded to every port."""
    from vswitch.netns import entered
    with entered(pod):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("eth0", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    body = b"\x88\xb5" + bytes(46)         # local experimental EtherType: nobody answers
    home = struct.pack("!HI", 0x0200, 0)
    s.send(b"\xff" * 6 + home + body)
    time.sleep(0.1)
    sent = 0
    while sent < count:
        frame = home + struct.pack("!HI", 0x0200, sent + 1) + body
        try:
            s.send(frame)
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
        if sent % 1000 == 0:
            time.sleep(0.001)               # let the switch keep up with the pod's queue
    s.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument("--macs", type=int, default=1_000_000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (it creates namespaces and TAP devices)")
    results = {}
    with namespaces("sp", "sm") as (ports_ns, mac_ns), tempfile.TemporaryDirectory() as tmp:
        sock, config = os.path.join(tmp, "s.sock"), os.path.join(tmp, "c.toml")
        with open(config, "w") as f:
            f.write(f'[node]\nsocket = "{sock}"\nstate_dir = "{tmp}/state"\n'
                    f'[fdb]\nmax_entries = {max(args.macs, 1024)}\nmax_per_port = {max(args.macs, 1024)}\n'
                    f'aging_time = 3600\n'
                    '[[network]]\nname = "bench"\nvni = 1\nsubnet = "198.18.0.0/16"\n')
        daemon = subprocess.Popen([sys.executable, "-m", "vswitch.daemon", "--config", config],
                                  stderr=open(os.path.join(tmp, "log"), "w"))
        ctl = [sys.executable, "-m", "vswitch.ctl", "--socket", sock]
        try:
            while subprocess.run(ctl + ["status"], capture_output=True).returncode:
                time.sleep(0.05)
            from vswitch.client import Client
            client = Client(sock)
            pid = daemon_pid(sock)
            time.sleep(0.5)
            results["rss_idle_mb"] = rss_mb(pid)
            add_ms = []
            for i in range(args.ports):
                start = time.perf_counter()
                client.add_port(f"p{i}", ports_ns, ifname=f"eth{i}")
                add_ms.append((time.perf_counter() - start) * 1000)
            results["port_add_ms_first_10"] = sum(add_ms[:10]) / 10
            results[f"port_add_ms_last_10_of_{args.ports}"] = sum(add_ms[-10:]) / 10
            results[f"rss_{args.ports}_ports_mb"] = rss_mb(pid)
            client.add_port("learner", mac_ns, port_security=False)
            start = time.perf_counter()
            learn_macs(mac_ns, args.macs)
            deadline = time.monotonic() + 60
            while client.status()["fdb_entries"] < args.macs and time.monotonic() < deadline:
                time.sleep(0.2)
            results["fdb_entries"] = client.status()["fdb_entries"]
            results["learn_seconds"] = time.perf_counter() - start
            results[f"rss_{args.ports}_ports_{args.macs}_macs_mb"] = rss_mb(pid)
        finally:
            subprocess.run(ctl + ["stop", "--remove-ports"], capture_output=True)
            daemon.wait(60)
    for key, value in results.items():
        print(f"{key:40} {value:12.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

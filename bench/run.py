#!/usr/bin/env python3
"""vswitch against the Linux bridge, in one run, on one machine.

Two pods (network namespaces) are connected once through vswitchd (TAP
ports) and once through a Linux bridge (veth pairs, the bridge in a
namespace of its own). The same workloads run against both:

* TCP throughput pod to pod (iperf3, one stream)
* 64-byte UDP packet rate (iperf3 -u, 18-byte payload: 64-byte frames
  with the 4-byte FCS a wire would add); iperf3's sender saturates near
  150 kpps on a small machine, so this is a floor, not the switch's limit
* round-trip time (ping): at a 2 ms interval, where every request finds
  an idle machine (vswitchd must be woken up, the kernel bridge needs no
  thread at all), and back to back (-i 0), where the switch is awake

and the table shows vswitch / kernel ratios. Run as root:
    python3 bench/run.py [--duration 10] [--json results.json]
Everything it creates is removed at exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time

PREFIX = "vb" + secrets.token_hex(2)
ADDR_A, ADDR_B, PLEN = "198.18.0.1", "198.18.0.2", 16
MTU = 1500


def sh(*args, **kw) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def ns_exec(ns: str, *args, **kw) -> str:
    return sh("ip", "netns", "exec", ns, *args, **kw)


@contextlib.contextmanager
def namespaces(*tags):
    names = [f"{PREFIX}-{t}" for t in tags]
    try:
        for n in names:
            sh("ip", "netns", "add", n)
            ns_exec(n, "ip", "link", "set", "lo", "up")
            for key in ("all", "default"):
                ns_exec(n, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        yield names
    finally:
        for n in names:
            for pid in subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                      text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@contextlib.contextmanager
def vswitch_topology():
    """Two pods on vswitchd; yields (pod_a, pod_b)."""
    with namespaces("va", "vb") as (a, b), tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "vswitchd.sock")
        config = os.path.join(tmp, "vswitchd.toml")
        with open(config, "w") as f:
            f.write(f'[node]\nsocket = "{sock}"\nstate_dir = "{tmp}"\n'
                    f'[[network]]\nname = "bench"\nvni = 1\nsubnet = "198.18.0.0/16"\nmtu = {MTU}\n')
        daemon = subprocess.Popen([sys.executable, "-m", "vswitch.daemon", "--config", config],
                                  stderr=open(os.path.join(tmp, "log"), "w"))
        ctl = [sys.executable, "-m", "vswitch.ctl", "--socket", sock]
        try:
            for _ in range(200):
                if subprocess.run(ctl + ["status"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            sh(*ctl, "port", "add", "a", "--netns", a, "--ip", f"{ADDR_A}/{PLEN}")
            sh(*ctl, "port", "add", "b", "--netns", b, "--ip", f"{ADDR_B}/{PLEN}")
            yield a, b
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)


@contextlib.contextmanager
def linux_bridge_topology():
    """Two pods on a Linux bridge (in its own namespace) over veth pairs."""
    with namespaces("br", "ka", "kb") as (br, a, b):
        ns_exec(br, "ip", "link", "add", "br0", "type", "bridge")
        ns_exec(br, "ip", "link", "set", "br0", "up")
        for pod, addr, tag in ((a, ADDR_A, "a"), (b, ADDR_B, "b")):
            ns_exec(br, "ip", "link", "add", f"p{tag}", "mtu", str(MTU), "type", "veth",
                    "peer", "name", "eth0", "netns", pod)
            ns_exec(br, "ip", "link", "set", f"p{tag}", "master", "br0", "up")
            ns_exec(pod, "ip", "link", "set", "eth0", "mtu", str(MTU), "up")
            ns_exec(pod, "ip", "addr", "add", f"{addr}/{PLEN}", "dev", "eth0")
        yield a, b


def iperf(client_ns: str, server_ns: str, duration: float, *extra) -> dict:
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):                       # wait for the server to listen
            if "5201" in ns_exec(server_ns, "ss", "-ltn"):
                break
            time.sleep(0.05)
        out = ns_exec(client_ns, "iperf3", "-c", ADDR_B, "-t", str(duration), "-J", *extra,
                      timeout=duration + 30)
        return json.loads(out)
    finally:
        server.kill()
        server.wait()


def measure(pods, duration: float) -> dict:
    a, b = pods
    ns_exec(a, "ping", "-c", "3", "-i", "0.1", ADDR_B)       # ARP, FDB warm
    tcp = iperf(a, b, duration)["end"]["sum_received"]["bits_per_second"]
    udp = iperf(a, b, duration, "-u", "-b", "0", "-l", "18")["end"]["sum"]
    delivered = (udp["packets"] - udp["lost_packets"]) / udp["seconds"]
    count = max(100, int(duration / 0.002))
    return {"tcp_gbps": tcp / 1e9, "udp64_kpps": delivered / 1e3,
            "udp64_loss_pct": udp.get("lost_percent", 0.0),
            "rtt_us": ping_rtt_us(a, count, "0.002", duration),
            "rtt_busy_us": ping_rtt_us(a, count * 4, "0", duration)}


def ping_rtt_us(ns: str, count: int, interval: str, duration: float) -> float:
    out = ns_exec(ns, "ping", "-q", "-c", str(count), "-i", interval, ADDR_B, timeout=duration + 60)
    return float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1)) * 1000


ROWS = [("TCP throughput, 1 stream", "tcp_gbps", "Gbit/s", True),
        ("64-byte UDP delivered", "udp64_kpps", "kpps", True),
        ("RTT, ping every 2 ms", "rtt_us", "us", False),
        ("RTT, ping back to back", "rtt_busy_us", "us", False)]


def table(results: dict) -> str:
    v, k = results["vswitch"], results["linux_bridge"]
    lines = [f"{'workload':28} {'vswitch':>12} {'linux bridge':>14} {'ratio':>7}",
             "-" * 64]
    for title, key, unit, _higher_better in ROWS:
        lines.append(f"{title:28} {v[key]:>8.2f} {unit:<3} {k[key]:>10.2f} {unit:<3} "
                     f"{v[key] / k[key]:>6.2f}x")
    lines.append(f"(ratio = vswitch / linux bridge; higher is better except for round-trip time;"
                 f" UDP loss {v['udp64_loss_pct']:.1f}% vs {k['udp64_loss_pct']:.1f}%)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per workload")
    parser.add_argument("--json", metavar="FILE", help="also write results as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (it creates namespaces and TAP devices)")
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
               "duration": args.duration}
    with vswitch_topology() as pods:
        results["vswitch"] = measure(pods, args.duration)
    with linux_bridge_topology() as pods:
        results["linux_bridge"] = measure(pods, args.duration)
    results["ratio"] = {key: results["vswitch"][key] / results["linux_bridge"][key]
                        for _, key, _, _ in ROWS}
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

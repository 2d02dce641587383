#!/usr/bin/env python3
"""vswitch against the Linux kernel, in one run, on one machine.

Bridge mode: two pods (network namespaces) are connected once through
vswitchd (TAP ports) and once through a Linux bridge (veth pairs, the bridge
in a namespace of its own). Overlay mode: two nodes (namespaces on a veth
underlay, 192.0.2.0/24) with one pod each, connected once by vswitchd in
VXLAN and once by the kernel (bridge + vxlan device per node). The same
workloads run against each:

* TCP throughput pod to pod (iperf3, one stream and four)
* 64-byte UDP packet rate (iperf3 -u, 18-byte payload: 64-byte frames
  with the 4-byte FCS a wire would add); iperf3's sender saturates near
  150 kpps on a small machine, so this is a floor, not the switch's limit;
  and the same frames from bench/pktgen.c (sendmmsg, 64 per call), fast
  enough to saturate the switch: delivered rate and loss
* TCP throughput with capture off and with one filtered capture running
  (bridge mode, vswitch alone: the kernel has nothing to compare)
* round-trip time (ping): at a 2 ms interval, where every request finds
  an idle machine (vswitchd must be woken up, the kernel bridge needs no
  thread at all), and back to back (-i 0), where the switch is awake

and the table shows vswitch / kernel ratios. Run as root:
    python3 bench/run.py [--mode bridge|overlay|all] [--duration 10] [--json results.json]
Everything it creates is removed at exit.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PREFIX = "vb" + secrets.token_hex(2)
ADDR_A, ADDR_B, PLEN = "198.18.0.1", "198.18.0.2", 16
MTU = 1450            # fits a 1500-byte underlay in overlay mode; the same for every topology


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
def vswitchd(tmp: str, name: str, node_ns: str | None = None, overlay: str = ""):
    """A vswitchd (in node_ns if given); yields the vswitchctl command."""
    sock = os.path.join(tmp, f"{name}.sock")
    config = os.path.join(tmp, f"{name}.toml")
    mode = "overlay" if overlay else "bridge"
    with open(config, "w") as f:
        f.write(f'[node]\nsocket = "{sock}"\nstate_dir = "{tmp}/{name}-state"\nmode = "{mode}"\n{overlay}'
                f'[[network]]\nname = "bench"\nvni = 1\nsubnet = "198.18.0.0/16"\nmtu = {MTU}\n')
    where = ["ip", "netns", "exec", node_ns] if node_ns else []
    daemon = subprocess.Popen(where + [sys.executable, "-m", "vswitch.daemon", "--config", config],
                              stderr=open(os.path.join(tmp, f"{name}.log"), "w"))
    ctl = [sys.executable, "-m", "vswitch.ctl", "--socket", sock]
    try:
        for _ in range(200):
            if subprocess.run(ctl + ["status"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        yield ctl
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)


@contextlib.contextmanager
def vswitch_topology(with_ctl: bool = False):
    """Two pods on vswitchd; yields (pod_a, pod_b), and vswitchctl's command."""
    with namespaces("va", "vb") as (a, b), tempfile.TemporaryDirectory() as tmp, \
            vswitchd(tmp, "node") as ctl:
        sh(*ctl, "port", "add", "a", "--netns", a, "--ip", f"{ADDR_A}/{PLEN}")
        sh(*ctl, "port", "add", "b", "--netns", b, "--ip", f"{ADDR_B}/{PLEN}")
        yield ((a, b), ctl) if with_ctl else (a, b)


CAPTURES = (("capture off", None),
            ("one capture, filter matching nothing", "icmp"),
            ("one capture, filter matching all", "tcp"))


def capture_cost(duration: float) -> dict:
    """Bridge-mode TCP throughput with capture off, and with one filtered
    capture running (written to /dev/null), in one run."""
    out = {}
    with vswitch_topology(with_ctl=True) as ((a, b), ctl):
        ns_exec(a, "ping", "-c", "1", "-w", "10", ADDR_B)
        for title, expr in CAPTURES:
            cap = None
            if expr:
                cap = subprocess.Popen(ctl + ["capture", "--filter", expr, "-w", "/dev/null"],
                                       stderr=subprocess.DEVNULL)
                while '"sessions": 0' in sh(*ctl, "stats", "--json"):
                    time.sleep(0.05)
            try:
                out[title] = iperf(a, b, duration)["end"]["sum_received"]["bits_per_second"] / 1e9
            finally:
                if cap:
                    cap.terminate()
                    cap.wait()
    return out


@contextlib.contextmanager
def underlay(*tags):
    """Node namespaces on a bridged veth underlay: node i is 192.0.2.(i+1)."""
    with namespaces("ul", *tags) as (hub, *nodes):
        ns_exec(hub, "ip", "link", "add", "ul", "type", "bridge")
        ns_exec(hub, "ip", "link", "set", "ul", "up")
        for i, node in enumerate(nodes):
            ns_exec(hub, "ip", "link", "add", f"ul{i}", "type", "veth", "peer", "name", "u0",
                    "netns", node)
            ns_exec(hub, "ip", "link", "set", f"ul{i}", "master", "ul", "up")
            ns_exec(node, "ip", "addr", "add", f"192.0.2.{i + 1}/24", "dev", "u0")
            ns_exec(node, "ip", "link", "set", "u0", "up")
        yield nodes


@contextlib.contextmanager
def vswitch_overlay_topology():
    """Two nodes running vswitchd in overlay mode, one pod each."""
    with underlay("v1", "v2") as (n1, n2), namespaces("va", "vb") as (a, b), \
            tempfile.TemporaryDirectory() as tmp, \
            vswitchd(tmp, "n1", n1, '[overlay]\nvtep_ip = "192.0.2.1"\npeers = ["192.0.2.2"]\n') as c1, \
            vswitchd(tmp, "n2", n2, '[overlay]\nvtep_ip = "192.0.2.2"\npeers = ["192.0.2.1"]\n') as c2:
        sh(*c1, "port", "add", "a", "--netns", a, "--ip", f"{ADDR_A}/{PLEN}")
        sh(*c2, "port", "add", "b", "--netns", b, "--ip", f"{ADDR_B}/{PLEN}")
        yield a, b


@contextlib.contextmanager
def kernel_vxlan_topology():
    """Two nodes with a Linux bridge and a kernel VXLAN device each."""
    with underlay("k1", "k2") as nodes, namespaces("ka", "kb") as pods:
        for i, (node, pod, addr) in enumerate(zip(nodes, pods, (ADDR_A, ADDR_B))):
            ns_exec(node, "ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "4789",
                    "local", f"192.0.2.{i + 1}", "dev", "u0")
            ns_exec(node, "ip", "link", "add", "br0", "type", "bridge")
            ns_exec(node, "ip", "link", "set", "vx0", "master", "br0", "mtu", str(MTU), "up")
            bridge_pod(node, pod, addr, "pk")
            ns_exec(node, "ip", "link", "set", "br0", "up")
            ns_exec(node, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0",
                    "dst", f"192.0.2.{2 - i}")
        yield pods


def bridge_pod(bridge_ns: str, pod: str, addr: str, port: str):
    """A veth from the bridge br0 in bridge_ns to eth0 in pod."""
    ns_exec(bridge_ns, "ip", "link", "add", port, "mtu", str(MTU), "type", "veth",
            "peer", "name", "eth0", "netns", pod)
    ns_exec(bridge_ns, "ip", "link", "set", port, "master", "br0", "up")
    ns_exec(pod, "ip", "link", "set", "eth0", "mtu", str(MTU), "up")
    ns_exec(pod, "ip", "addr", "add", f"{addr}/{PLEN}", "dev", "eth0")


@contextlib.contextmanager
def linux_bridge_topology():
    """Two pods on a Linux bridge (in its own namespace) over veth pairs."""
    with namespaces("br", "ka", "kb") as (br, a, b):
        ns_exec(br, "ip", "link", "add", "br0", "type", "bridge")
        ns_exec(br, "ip", "link", "set", "br0", "up")
        bridge_pod(br, a, ADDR_A, "pa")
        bridge_pod(br, b, ADDR_B, "pb")
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


def pktgen() -> str:
    """bench/pktgen.c, built once per run with the system's cc."""
    global _PKTGEN
    if _PKTGEN is None:
        where = tempfile.mkdtemp(prefix="vswitch-bench-")
        atexit.register(shutil.rmtree, where, True)
        out = os.path.join(where, "pktgen")
        sh("cc", "-O2", "-o", out, os.path.join(os.path.dirname(__file__), "pktgen.c"))
        _PKTGEN = out
    return _PKTGEN


_PKTGEN = None


def small_packets(a: str, b: str, duration: float) -> tuple[float, float]:
    """64-byte frames (18-byte UDP payload) from a to b as fast as sendmmsg
    goes: (delivered kpps, loss %)."""
    receiver = subprocess.Popen(["ip", "netns", "exec", b, pktgen(), "recv", "9000",
                                 str(duration + 1)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    sent = int(ns_exec(a, pktgen(), "send", ADDR_B, "9000", str(duration), "18",
                       timeout=duration + 30))
    received = int(receiver.communicate(timeout=duration + 30)[0])
    return received / duration / 1e3, 100 * (1 - received / sent) if sent else 0.0


def measure(pods, duration: float) -> dict:
    a, b = pods
    ns_exec(a, "ping", "-c", "1", "-w", "10", ADDR_B)        # bridge ports ready, ARP, FDB warm
    tcp = iperf(a, b, duration)["end"]["sum_received"]["bits_per_second"]
    tcp4 = iperf(a, b, duration, "-P", "4")["end"]["sum_received"]["bits_per_second"]
    gen_kpps, gen_loss = small_packets(a, b, duration)
    udp = iperf(a, b, duration, "-u", "-b", "0", "-l", "18")["end"]["sum"]
    delivered = (udp["packets"] - udp["lost_packets"]) / udp["seconds"]
    count = max(100, int(duration / 0.002))
    return {"tcp_gbps": tcp / 1e9, "tcp4_gbps": tcp4 / 1e9, "udp64_kpps": delivered / 1e3,
            "gen64_kpps": gen_kpps, "gen64_loss_pct": gen_loss,
            "udp64_loss_pct": udp.get("lost_percent", 0.0),
            "rtt_us": ping_rtt_us(a, count, "0.002", duration),
            "rtt_busy_us": ping_rtt_us(a, count * 4, "0", duration)}


def ping_rtt_us(ns: str, count: int, interval: str, duration: float) -> float:
    out = ns_exec(ns, "ping", "-q", "-c", str(count), "-i", interval, ADDR_B, timeout=duration + 60)
    return float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1)) * 1000


ROWS = [("TCP throughput, 1 stream", "tcp_gbps", "Gbit/s", True),
        ("TCP throughput, 4 streams", "tcp4_gbps", "Gbit/s", True),
        ("64-byte UDP delivered (iperf3)", "udp64_kpps", "kpps", True),
        ("64-byte UDP delivered (sendmmsg)", "gen64_kpps", "kpps", True),
        ("RTT, ping every 2 ms", "rtt_us", "us", False),
        ("RTT, ping back to back", "rtt_busy_us", "us", False)]


MODES = {"bridge": (("vswitch", vswitch_topology), ("linux_bridge", linux_bridge_topology)),
         "overlay": (("vswitch", vswitch_overlay_topology), ("kernel_vxlan", kernel_vxlan_topology))}


def table(results: dict) -> str:
    lines = []
    for mode, ((_, _), (ref, _)) in MODES.items():
        if mode not in results:
            continue
        v, k = results[mode]["vswitch"], results[mode][ref]
        lines += ["", f"{mode} mode: vswitch vs {ref.replace('_', ' ')}",
                  f"{'workload':33} {'vswitch':>14} {'kernel':>14} {'ratio':>7}", "-" * 71]
        for title, key, unit, _higher_better in ROWS:
            lines.append(f"{title:33} {v[key]:>10.2f} {unit:<3} {k[key]:>10.2f} {unit:<3} "
                         f"{v[key] / k[key]:>6.2f}x")
        lines.append(f"64-byte loss: iperf3 {v['udp64_loss_pct']:.1f}% vs {k['udp64_loss_pct']:.1f}%, "
                     f"sendmmsg {v['gen64_loss_pct']:.1f}% vs {k['gen64_loss_pct']:.1f}%")
    lines.append("(ratio = vswitch / kernel; higher is better except for round-trip times)")
    if "capture_tcp_gbps" in results:
        cap = results["capture_tcp_gbps"]
        off = cap["capture off"]
        lines += ["", "bridge mode TCP throughput with capture (vswitch alone)"]
        lines += [f"{title:40} {gbps:>6.2f} Gbit/s {gbps / off:>6.2f}x" for title, gbps in cap.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["bridge", "overlay", "all"], default="all")
    parser.add_argument("--duration", type=float, default=10, help="seconds per workload")
    parser.add_argument("--json", metavar="FILE", help="also write results as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (it creates namespaces and TAP devices)")
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
               "duration": args.duration, "mtu": MTU}
    for mode, sides in MODES.items():
        if args.mode not in (mode, "all"):
            continue
        results[mode] = {}
        for side, topology in sides:
            with topology() as pods:
                results[mode][side] = measure(pods, args.duration)
        ref = results[mode][sides[1][0]]
        results[mode]["ratio"] = {key: results[mode]["vswitch"][key] / ref[key]
                                  for _, key, _, _ in ROWS}
    if args.mode in ("bridge", "all"):
        results["capture_tcp_gbps"] = capture_cost(args.duration)
    print(table(results).lstrip("\n"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

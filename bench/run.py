#!/usr/bin/env python3
"""vswitch against the Linux kernel, in one run, on one machine.

Bridge mode: two pods (network namespaces) are connected once through
vswitchd (TAP ports) and once through a Linux bridge (veth pairs, the bridge
in a namespace of its own). Overlay mode: two nodes (namespaces on a veth
underlay, 192.0.2.0/24) with one pod each, connected once by vswitchd in
VXLAN and once by the kernel (bridge + vxlan device per node). The same
workloads run against each:

* TCP throughput pod to pod (iperf3): one stream, the median of three runs
  taken in turn on every switch of the mode (all topologies stay up), so
  that the machine's drift over minutes hits every side alike; four streams
* 64-byte UDP packet rate (iperf3 -u, 18-byte payload: 64-byte frames
  with the 4-byte FCS a wire would add); iperf3's sender saturates near
  150 kpps on a small machine, so this is a floor, not the switch's limit;
  and the same frames from bench/pktgen.c (sendmmsg, 64 per call), fast
  enough to saturate the switch: the rate delivered flat out and its loss,
  and the highest rate delivered with under 1% loss (pktgen paced, found
  by bisection, as RFC 2544's throughput test does)
* round-trip time (ping): at a 2 ms interval, where every request finds
  an idle machine (vswitchd must be woken up, the kernel bridge needs no
  thread at all), and back to back (-i 0), where the switch is awake;
  and a UDP request/response test (pktgen rr: one 18-byte request at a time)
* a victim under a flooding neighbour (bridge mode, four pods): pod A's TCP
  throughput to B and its ping RTT while pod C floods pod D flat out, against
  A's own figures without the flood
* TCP throughput with capture off and with one filtered capture running
  (bridge mode, vswitch alone: the kernel has nothing to compare)
* the fast path without syscalls and scale: bench/micro.py (per-frame cost
  at 1k/100k/1M FDB entries, flood cost against ports) and bench/scale.py
  (daemon RSS, port add time), unless --skip-micro
* NetworkPolicy: bench/policy.py (TCP and the 64-byte rate with no policy,
  a default deny plus 10 rules, 1,000 rules per port), unless --skip-policy;
  the conntrack lookup's cost is in bench/micro.py
* cluster mode: bench/cluster.py (convergence of a joining node, memory per
  remote pod, etcd writes per ADD, ARP on the underlay), unless --skip-cluster

and the table shows vswitch / kernel ratios. Run as root:
    python3 bench/run.py [--mode bridge|overlay|all] [--duration 10] [--json FILE] [--png FILE]
It prints a table, and writes the results as JSON (bench-results.json) and a
chart (bench-results.png). Everything it creates is removed at exit.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = "vb" + secrets.token_hex(2)
ADDRS = [f"198.18.0.{i}" for i in range(1, 5)]      # pods a, b (and c, d: flooder, flooded)
ADDR_A, ADDR_B, PLEN = ADDRS[0], ADDRS[1], 16
ADDRS6 = [f"2001:db8:18::{i}" for i in range(1, 5)]    # dual-stack: IPv6 TCP is measured too
ADDR6_B, PLEN6 = ADDRS6[1], 64
MTU = 1450            # fits a 1500-byte underlay in overlay mode; the same for every topology
DATAPATH = ""         # vswitchd's [datapath] settings (--datapath): the defaults unless asked


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
                f'[datapath]\n{DATAPATH}\n'
                f'[[network]]\nname = "bench"\nvni = 1\nsubnet = "198.18.0.0/16"\nmtu = {MTU}\n'
                f'subnet6 = "2001:db8:18::/64"\n')
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
def vswitch_topology(with_ctl: bool = False, pods: int = 2):
    """Pods on vswitchd; yields their namespaces, and vswitchctl's command."""
    tags = ["va", "vb", "vc", "vd"][:pods]
    with namespaces(*tags) as names, tempfile.TemporaryDirectory() as tmp, \
            vswitchd(tmp, "node") as ctl:
        for tag, ns, addr, addr6 in zip(tags, names, ADDRS, ADDRS6):
            sh(*ctl, "port", "add", tag, "--netns", ns, "--ip", f"{addr}/{PLEN}",
               "--ip", f"{addr6}/{PLEN6}")
        yield (names, ctl) if with_ctl else names


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
                out[title] = tcp_gbps(a, b, duration)
            finally:
                if cap:
                    cap.terminate()
                    cap.wait()
    return out


@contextlib.contextmanager
def underlay(*tags):
    """Node namespaces on a bridged veth underlay: node i is 192.0.2.(i+1)."""
    with namespaces("u" + tags[0], *tags) as (hub, *nodes):
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
        sh(*c1, "port", "add", "a", "--netns", a, "--ip", f"{ADDR_A}/{PLEN}",
           "--ip", f"{ADDRS6[0]}/{PLEN6}")
        sh(*c2, "port", "add", "b", "--netns", b, "--ip", f"{ADDR_B}/{PLEN}",
           "--ip", f"{ADDR6_B}/{PLEN6}")
        yield a, b


@contextlib.contextmanager
def kernel_vxlan_topology():
    """Two nodes with a Linux bridge and a kernel VXLAN device each."""
    with underlay("k1", "k2") as nodes, namespaces("ka", "kb") as pods:
        for i, (node, pod, addr) in enumerate(zip(nodes, pods, ADDRS)):
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
    add_addresses(pod, addr)


def add_addresses(pod: str, addr: str):
    """A pod's IPv4 address and the IPv6 one of the same index (no DAD: at once)."""
    ns_exec(pod, "ip", "addr", "add", f"{addr}/{PLEN}", "dev", "eth0")
    ns_exec(pod, "ip", "addr", "add", f"{ADDRS6[ADDRS.index(addr)]}/{PLEN6}", "dev", "eth0",
            "nodad")


@contextlib.contextmanager
def linux_bridge_topology(pods: int = 2):
    """Pods on a Linux bridge (in its own namespace) over veth pairs."""
    tags = ["ka", "kb", "kc", "kd"][:pods]
    with namespaces("br", *tags) as (br, *names):
        ns_exec(br, "ip", "link", "add", "br0", "type", "bridge")
        ns_exec(br, "ip", "link", "set", "br0", "up")
        for i, (ns, addr) in enumerate(zip(names, ADDRS)):
            bridge_pod(br, ns, addr, f"p{i}")
        yield names


def wait_for_link(dev: str, timeout: float = 10.0):
    """Wait until dev exists in this namespace (a daemonised switch creates
    its TAPs after its parent returns)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(f"/sys/class/net/{dev}"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dev} did not appear within {timeout:g} s")
        time.sleep(0.01)


def pod_iface(pod: str, dev: str, addr: str):
    """Move dev into pod as eth0 and address it."""
    wait_for_link(dev)
    sh("ip", "link", "set", dev, "netns", pod)
    ns_exec(pod, "ip", "link", "set", dev, "name", "eth0", "mtu", str(MTU), "up")
    add_addresses(pod, addr)


@contextlib.contextmanager
def vde_topology(pods: int = 2):
    """Pods on vde_switch, each through a TAP of the switch's moved into it."""
    tags = ["da", "db", "dc", "dd"][:pods]
    with namespaces(*tags) as names, tempfile.TemporaryDirectory() as tmp:
        taps = [f"{PREFIX}d{i}" for i in range(pods)]
        sh("vde_switch", "-d", "-p", f"{tmp}/pid", "-s", f"{tmp}/sw", "-M", f"{tmp}/mgmt",
           *[x for tap in taps for x in ("-t", tap)])
        try:
            for tap, ns, addr in zip(taps, names, ADDRS):
                pod_iface(ns, tap, addr)
            yield names
        finally:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(open(f"{tmp}/pid").read()), signal.SIGTERM)


@contextlib.contextmanager
def ovs_topology(pods: int = 2):
    """Pods on Open vSwitch's userspace datapath (a netdev bridge), over veth
    pairs, with OVS's own database and daemons in a private directory. The
    pods turn transmit checksum offload off: OVS's userspace datapath stalls
    TCP between veths otherwise."""
    tags = ["oa", "ob", "oc", "od"][:pods]
    with namespaces(*tags) as names, tempfile.TemporaryDirectory() as tmp:
        db = f"unix:{tmp}/db.sock"
        vsctl = ["ovs-vsctl", f"--db={db}", "--timeout=30"]
        bridge = f"{PREFIX}ob"
        sh("ovsdb-tool", "create", f"{tmp}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        sh("ovsdb-server", f"{tmp}/conf.db", f"--remote=p{db}", f"--pidfile={tmp}/db.pid",
           f"--unixctl={tmp}/db.ctl", f"--log-file={tmp}/db.log", "--detach")
        try:
            sh(*vsctl, "--no-wait", "init")
            sh("ovs-vswitchd", db, f"--pidfile={tmp}/vswitchd.pid", f"--unixctl={tmp}/vswitchd.ctl",
               f"--log-file={tmp}/vswitchd.log", "--detach")
            sh(*vsctl, "add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
            for i, (ns, addr) in enumerate(zip(names, ADDRS)):
                port = f"{PREFIX}o{i}"
                sh("ip", "link", "add", port, "mtu", str(MTU), "type", "veth", "peer", "name",
                   f"{port}p")
                sh("ip", "link", "set", port, "up")
                sh(*vsctl, "add-port", bridge, port)
                pod_iface(ns, f"{port}p", addr)
                ns_exec(ns, "ethtool", "-K", "eth0", "tx", "off")
            yield names
        finally:
            subprocess.run([*vsctl, "--if-exists", "del-br", bridge], capture_output=True)
            for i in range(pods):
                subprocess.run(["ip", "link", "del", f"{PREFIX}o{i}"], capture_output=True)
            for daemon in ("vswitchd", "db"):
                subprocess.run(["ovs-appctl", "-t", f"{tmp}/{daemon}.ctl", "exit"], capture_output=True)


def iperf(client_ns: str, server_ns: str, duration: float, *extra, server_addr=ADDR_B) -> dict:
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):                       # wait for the server to listen
            if "5201" in ns_exec(server_ns, "ss", "-ltn"):
                break
            time.sleep(0.05)
        out = ns_exec(client_ns, "iperf3", "-c", server_addr, "-t", str(duration), "-J", *extra,
                      timeout=duration + 30)
        return json.loads(out)
    finally:
        server.kill()
        server.wait()


def tcp_gbps(client_ns: str, server_ns: str, duration: float, *extra, server_addr=ADDR_B) -> float:
    return iperf(client_ns, server_ns, duration, *extra, server_addr=server_addr)[
        "end"]["sum_received"]["bits_per_second"] / 1e9


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


def pktgen_in(ns: str, *args) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, pktgen(), *map(str, args)],
                            stdout=subprocess.PIPE, text=True)


def small_packets(a: str, b: str, duration: float, pps: float = 0) -> tuple[float, float, float]:
    """64-byte frames (18-byte UDP payload) from a to b, flat out or paced
    at pps: (delivered kpps, loss %, offered kpps)."""
    receiver = pktgen_in(b, "recv", 9000, duration + 1)
    time.sleep(0.3)
    sent = int(ns_exec(a, pktgen(), "send", ADDR_B, "9000", str(duration), "18", str(int(pps)),
                       timeout=duration + 30))
    received = int(receiver.communicate(timeout=duration + 30)[0])
    return (received / duration / 1e3, 100 * (1 - received / sent) if sent else 0.0,
            sent / duration / 1e3)


def rate_under_1pct_loss(a: str, b: str, duration: float, flat_out) -> float:
    """The highest delivered 64-byte rate with under 1% loss, in kpps: flat
    out if that loses under 1%, else bisection of the paced rate."""
    delivered, loss, offered = flat_out
    if loss < 1:
        return delivered
    lo, hi, best = 0.0, offered, 0.0
    probe = max(1.0, min(duration, 3.0))
    for _ in range(6):
        mid = (lo + hi) / 2
        got, loss, _ = small_packets(a, b, probe, mid * 1e3)
        if loss < 1:
            lo, best = mid, got
        else:
            hi = mid
    return best


def request_response(a: str, b: str, duration: float) -> tuple[float, float]:
    """pktgen rr: (transactions/s, mean round trip in us)."""
    echo = pktgen_in(b, "echo", 9001, duration + 2)
    try:
        time.sleep(0.3)
        count, mean = ns_exec(a, pktgen(), "rr", ADDR_B, "9001", str(duration),
                              timeout=duration + 30).split()
        return int(count) / duration, float(mean)
    finally:
        echo.kill()
        echo.wait()


def tcp_interleaved(pods: dict, duration: float, rounds: int = 3, to: str = ADDR_B) -> dict:
    """TCP throughput, one stream, of every side in turn, `rounds` times, so
    that the machine's drift over minutes hits all sides alike (to: pod b's
    IPv4 or IPv6 address)."""
    runs = {side: [] for side in pods}
    for a, *_ in pods.values():
        ns_exec(a, "ping", "-c", "1", "-w", "10", to)    # bridge ports ready, ARP/ND, FDB warm
    for _ in range(rounds):
        for side, (a, b, *_) in pods.items():
            runs[side].append(tcp_gbps(a, b, duration, server_addr=to))
    return runs


def measure(pods, duration: float, tcp_runs: list, tcp6_runs: list) -> dict:
    """Every workload on one topology; TCP one stream is the median of
    tcp_runs (tcp_interleaved), over IPv6 of tcp6_runs."""
    a, b = pods[:2]
    flat_out = small_packets(a, b, duration)
    udp = iperf(a, b, duration, "-u", "-b", "0", "-l", "18")["end"]["sum"]
    rr_tps, rr_us = request_response(a, b, duration)
    count = max(100, int(duration / 0.002))
    out = {"tcp_gbps": statistics.median(tcp_runs), "tcp_runs_gbps": tcp_runs,
           "tcp6_gbps": statistics.median(tcp6_runs), "tcp6_runs_gbps": tcp6_runs,
           "tcp4_gbps": tcp_gbps(a, b, duration, "-P", "4"),
           "udp64_kpps": (udp["packets"] - udp["lost_packets"]) / udp["seconds"] / 1e3,
           "udp64_loss_pct": udp.get("lost_percent", 0.0),
           "gen64_kpps": flat_out[0], "gen64_loss_pct": flat_out[1],
           "gen64_1pct_kpps": rate_under_1pct_loss(a, b, duration, flat_out),
           "rtt_us": ping_rtt_us(a, count, "0.002", duration),
           "rtt_busy_us": ping_rtt_us(a, count * 4, "0", duration),
           "rr_us": rr_us, "rr_tps": rr_tps}
    if len(pods) == 4:
        out.update(victim(pods, duration, out["tcp_gbps"]))
    return out


def victim(pods, duration: float, unloaded_gbps: float) -> dict:
    """Pod a's TCP throughput to b, and its RTT, while pod c floods pod d
    with 64-byte frames flat out."""
    a, b, c, d = pods
    ns_exec(c, "ping", "-c", "1", "-w", "10", ADDRS[3])
    sink = pktgen_in(d, "recv", 9000, 2 * duration + 4)
    flood = pktgen_in(c, "send", ADDRS[3], 9000, 2 * duration + 3, 18)
    try:
        time.sleep(0.5)
        gbps = tcp_gbps(a, b, duration)
        rtt = ping_rtt_us(a, max(100, int(duration / 0.002)), "0.002", duration)
    finally:
        for p in (flood, sink):
            p.kill()
            p.wait()
    return {"victim_tcp_gbps": gbps, "victim_share": gbps / unloaded_gbps, "victim_rtt_us": rtt}


def ping_rtt_us(ns: str, count: int, interval: str, duration: float) -> float:
    out = ns_exec(ns, "ping", "-q", "-c", str(count), "-i", interval, ADDR_B, timeout=duration + 60)
    return float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1)) * 1000


ROWS = [("TCP throughput, 1 stream", "tcp_gbps", "Gbit/s", True),
        ("TCP throughput, 1 stream, IPv6", "tcp6_gbps", "Gbit/s", True),
        ("TCP throughput, 4 streams", "tcp4_gbps", "Gbit/s", True),
        ("64-byte UDP delivered (iperf3)", "udp64_kpps", "kpps", True),
        ("64-byte delivered flat out", "gen64_kpps", "kpps", True),
        ("64-byte rate with <1% loss", "gen64_1pct_kpps", "kpps", True),
        ("RTT, ping every 2 ms", "rtt_us", "us", False),
        ("RTT, ping back to back", "rtt_busy_us", "us", False),
        ("RTT, UDP request/response", "rr_us", "us", False)]
VICTIM_ROWS = [("victim TCP while a neighbour floods", "victim_tcp_gbps", "Gbit/s", True),
               ("  share of its unloaded TCP", "victim_share", "", True),
               ("victim RTT while a neighbour floods", "victim_rtt_us", "us", False)]


MODES = {"bridge": (("vswitch", functools.partial(vswitch_topology, pods=4)),
                    ("linux_bridge", functools.partial(linux_bridge_topology, pods=4))),
         "overlay": (("vswitch", vswitch_overlay_topology), ("kernel_vxlan", kernel_vxlan_topology))}
# Other userspace switches, measured in bridge mode where installed.
OTHERS = {"vde_switch": ("vde_switch", functools.partial(vde_topology, pods=4)),
          "ovs_userspace": ("ovs-vswitchd", functools.partial(ovs_topology, pods=4))}


def others() -> dict:
    return {name: topology for name, (binary, topology) in OTHERS.items() if shutil.which(binary)}


def rows(mode: str) -> list:
    return ROWS + VICTIM_ROWS if mode == "bridge" else ROWS


def table(results: dict) -> str:
    lines = []
    for mode, ((_, _), (ref, _)) in MODES.items():
        if mode not in results:
            continue
        v, k = results[mode]["vswitch"], results[mode][ref]
        extra = [name for name in OTHERS if name in results[mode]]
        lines += ["", f"{mode} mode: vswitch vs {ref.replace('_', ' ')}",
                  f"{'workload':37} {'vswitch':>14} {'kernel':>14} {'ratio':>7}"
                  + "".join(f" {name:>14} {'ratio':>7}" for name in extra),
                  "-" * (75 + 23 * len(extra))]
        for title, key, unit, _higher_better in rows(mode):
            lines.append(f"{title:37} {v[key]:>10.2f} {unit:<3} {k[key]:>10.2f} {unit:<3} "
                         f"{v[key] / k[key]:>6.2f}x" + "".join(
                             f" {results[mode][name][key]:>10.2f} {unit:<3} "
                             f"{v[key] / results[mode][name][key]:>6.2f}x" for name in extra))
        ratio4, ratio6 = v["tcp_gbps"] / k["tcp_gbps"], v["tcp6_gbps"] / k["tcp6_gbps"]
        lines.append(f"IPv6 TCP ratio / IPv4 TCP ratio: {ratio6 / ratio4:.2f} (goal: 0.90 or more)")
        lines.append(f"64-byte loss flat out: iperf3 {v['udp64_loss_pct']:.1f}% vs "
                     f"{k['udp64_loss_pct']:.1f}%, pktgen {v['gen64_loss_pct']:.1f}% vs "
                     f"{k['gen64_loss_pct']:.1f}%")
    lines.append("(ratio = vswitch / kernel, or / the switch left of it; higher is better except "
                 "for round-trip times)")
    if "capture_tcp_gbps" in results:
        cap = results["capture_tcp_gbps"]
        off = cap["capture off"]
        lines += ["", "bridge mode TCP throughput with capture (vswitch alone)"]
        lines += [f"{title:40} {gbps:>6.2f} Gbit/s {gbps / off:>6.2f}x" for title, gbps in cap.items()]
    if "micro" in results:
        lines += ["", "fast path without syscalls (bench/micro.py): ns per frame",
                  f"{'FDB entries':>12} {'Cython':>10} {'Python':>10} {'gain':>8}"]
        for entries, row in results["micro"]["per_frame_ns"].items():
            lines.append(f"{int(entries):>12,} {row['cython']:>10.1f} {row['python']:>10.1f} "
                         f"{row['python'] / row['cython']:>7.0f}x")
        lines.append(f"{'':>12} {'Cython':>10} {'Python':>10} {'scapy':>10}")
        for key, title in (("encap_ns", "encap"), ("decap_ns", "decap"),
                           ("segment_ns", "segment 64K")):
            row = results["micro"][key]
            lines.append(f"{title:>12} {row['cython']:>10.1f} {row['python']:>10.1f} "
                         f"{row['scapy']:>10.0f} {row['python'] / row['cython']:>7.0f}x")
        lines.append("flood one frame to N ports: " + ", ".join(
            f"{n}: {ns / 1e3:.1f} us" for n, ns in results["micro"]["flood_ns"].items()))
        micro = results["micro"]
        for family, suffix in (("IPv4", ""), ("IPv6", "6")):
            lines.append(f"conntrack lookup of an established {family} packet (with its update): "
                         + ", ".join(
                             f"{int(n):,} flows {ns:.1f} ns "
                             f"({micro[f'conntrack{suffix}_update_ns'][n]:.1f}), "
                             f"{micro[f'conntrack{suffix}_bytes_per_flow'][n]:.0f} B/flow"
                             for n, ns in micro[f"conntrack{suffix}_ns"].items()))
    if "scale" in results:
        lines += ["", "scale (bench/scale.py)"] + [f"{key:32} {value:>10.1f}"
                                                   for key, value in results["scale"].items()]
    if "policy" in results:
        from policy import table as policy_table
        lines += ["", policy_table(results["policy"])]
    if "cluster" in results:
        from cluster import table as cluster_table
        lines += ["", cluster_table(results["cluster"])]
    return "\n".join(lines)


def sub_bench(script: str, *args) -> dict:
    """Run bench/micro.py, scale.py or cluster.py and take its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), script),
                        *args, "--json", out.name], check=True, stdout=subprocess.DEVNULL)
        return json.load(open(out.name))


def chart(results: dict, path: str):
    """The ratios per mode, and the fast path's curves, in one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    modes = [m for m in MODES if m in results]
    fig, axes = plt.subplots(1, len(modes) + ("micro" in results) * 2, figsize=(16, 5),
                             squeeze=False)
    axes = list(axes[0])
    for ax, mode in zip(axes, modes):
        keys = rows(mode)
        ratios = [results[mode]["ratio"][key] for _, key, _, _ in keys]
        colors = ["tab:blue" if higher else "tab:orange" for *_, higher in keys]
        ax.barh([title for title, *_ in keys], ratios, color=colors)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_title(f"{mode}: vswitch / kernel\n(blue: higher is better; orange: lower)")
        ax.tick_params(axis="y", labelsize=7)
    if "micro" in results:
        per_frame = results["micro"]["per_frame_ns"]
        entries = [int(e) for e in per_frame]
        ax = axes[len(modes)]
        for impl in ("cython", "python"):
            ax.plot(entries, [per_frame[e][impl] for e in per_frame], marker="o", label=impl)
        ax.set(xscale="log", yscale="log", xlabel="FDB entries", ylabel="ns per frame",
               title="parse + learn + lookup")
        ax.legend()
        flood = results["micro"]["flood_ns"]
        ax = axes[len(modes) + 1]
        ax.plot([int(n) for n in flood], [v / 1e3 for v in flood.values()], marker="o")
        ax.set(xlabel="ports", ylabel="us per flooded frame", title="flood cost")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["bridge", "overlay", "all"], default="all")
    parser.add_argument("--duration", type=float, default=10, help="seconds per workload")
    parser.add_argument("--json", metavar="FILE", default="bench-results.json")
    parser.add_argument("--png", metavar="FILE", default="bench-results.png")
    parser.add_argument("--datapath", metavar="KEY=VALUE", action="append", default=[],
                        help="a vswitchd [datapath] setting to measure, e.g. busy_poll_us=0")
    parser.add_argument("--skip-micro", action="store_true",
                        help="leave out bench/micro.py and bench/scale.py")
    parser.add_argument("--scale-ports", type=int, default=1000)
    parser.add_argument("--scale-macs", type=int, default=1_000_000)
    parser.add_argument("--skip-policy", action="store_true",
                        help="leave out bench/policy.py (NetworkPolicy's cost)")
    parser.add_argument("--skip-cluster", action="store_true",
                        help="leave out bench/cluster.py (etcd and simulated nodes)")
    parser.add_argument("--cluster-nodes", type=int, nargs="+", default=[10, 100, 1000])
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (it creates namespaces and TAP devices)")
    global DATAPATH
    DATAPATH = "\n".join(args.datapath)
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
               "duration": args.duration, "mtu": MTU}
    for mode, sides in MODES.items():
        if args.mode not in (mode, "all"):
            continue
        results[mode] = {}
        topologies = dict(sides) | (others() if mode == "bridge" else {})
        with contextlib.ExitStack() as stack:
            pods = {side: stack.enter_context(topology()) for side, topology in topologies.items()}
            tcp_runs = tcp_interleaved(pods, args.duration)
            tcp6_runs = tcp_interleaved(pods, args.duration, to=ADDR6_B)
            for side in topologies:
                results[mode][side] = measure(pods[side], args.duration, tcp_runs[side],
                                              tcp6_runs[side])
        v, ref = results[mode]["vswitch"], results[mode][sides[1][0]]
        results[mode]["ratio"] = {key: v[key] / ref[key] for _, key, _, _ in rows(mode)}
    if args.mode in ("bridge", "all"):
        results["capture_tcp_gbps"] = capture_cost(args.duration)
    if not args.skip_micro:
        results["micro"] = sub_bench("micro.py")
        results["scale"] = sub_bench("scale.py", "--ports", str(args.scale_ports),
                                     "--macs", str(args.scale_macs))
    if not args.skip_policy and args.mode in ("bridge", "all"):
        results["policy"] = sub_bench("policy.py", "--duration", str(args.duration))
    if not args.skip_cluster:
        results["cluster"] = sub_bench("cluster.py", "--nodes", *map(str, args.cluster_nodes))
    print(table(results).lstrip("\n"))
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    chart(results, args.png)
    print(f"\nresults: {args.json}, chart: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

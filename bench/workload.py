"""What the benches measure between two pods: iperf3 TCP and UDP, 64-byte
frames from bench/pktgen.c (flat out, paced, request/response), ping
RTT, the victim of a flooding neighbour, and many flows at once (two pod
pairs, four streams each) with the CPU they cost the whole machine."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

from topology import ADDR_B, ADDRS, ns_exec, sh


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


def busy_jiffies() -> tuple[int, int]:
    """(busy, all) jiffies of every CPU since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]                    # idle, iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def worker_cpu() -> dict[str, int]:
    """Jiffies each vswitchd forwarding thread (named vswitch-wN) has used."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip()
                if name.startswith("vswitch-w"):
                    with open(f"/proc/{pid}/task/{tid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    out[f"{pid}/{name}"] = int(fields[11]) + int(fields[12])    # utime + stime
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def many_flows(pods, duration: float) -> dict:
    """Two pod pairs (a to b, c to d), four TCP streams each, at once: their
    total throughput, the CPU of the whole machine per forwarded gigabit
    (vswitch's, the pods' stacks and iperf3's alike), and the largest share
    of the forwarding threads' CPU that one of them used."""
    a, b, c, d = pods
    servers = [subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-s", "-1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for ns in (b, d)]
    try:
        for ns in (b, d):
            while "5201" not in ns_exec(ns, "ss", "-ltn"):
                time.sleep(0.05)
        ns_exec(c, "ping", "-c", "1", "-w", "10", ADDRS[3])
        busy0, all0 = busy_jiffies()
        threads0 = worker_cpu()
        clients = [subprocess.Popen(["ip", "netns", "exec", ns, "iperf3", "-c", to, "-t",
                                     str(duration), "-P", "4", "-J"], stdout=subprocess.PIPE,
                                    text=True) for ns, to in ((a, ADDR_B), (c, ADDRS[3]))]
        results = [json.loads(client.communicate(timeout=duration + 30)[0]) for client in clients]
        busy1, all1 = busy_jiffies()
        threads1 = worker_cpu()
    finally:
        for server in servers:
            server.kill()
            server.wait()
    gbps = sum(r["end"]["sum_received"]["bits_per_second"] for r in results) / 1e9
    seconds = min(r["end"]["sum_received"]["seconds"] for r in results)
    cpu_seconds = (busy1 - busy0) / os.sysconf("SC_CLK_TCK")
    used = [threads1[t] - threads0.get(t, 0) for t in threads1]
    return {"many_gbps": gbps, "many_cpu_ms_per_gbit": 1e3 * cpu_seconds / (gbps * seconds),
            "many_cpu_busy_pct": 100 * (busy1 - busy0) / max(all1 - all0, 1),
            "many_top_worker_share": max(used) / sum(used) if used and sum(used) else None}


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
        out.update(many_flows(pods, duration))
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


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")

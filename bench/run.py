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
* many flows (bridge mode, four pods): A to B and C to D, four TCP streams
  each, at once: their total, the whole machine's CPU per forwarded gigabit
  (/proc/stat), and the largest share of vswitchd's forwarding threads'
  CPU one thread used; with --workers-sweep, vswitch's total for 1, 2, ...
  up to the CPUs present forwarding threads
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
    python3 bench/run.py [--mode bridge|overlay|all] [--duration 10] [--workers-sweep]
                         [--json FILE] [--png FILE]
It prints a table, and writes the results as JSON (bench-results.json) and a
chart (bench-results.png). Everything it creates is removed at exit.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import topology
from topology import (
    ADDR6_B,
    ADDR_B,
    MTU,
    kernel_vxlan_topology,
    linux_bridge_topology,
    ns_exec,
    ovs_topology,
    sh,
    vde_topology,
    vswitch_overlay_topology,
    vswitch_topology,
)
from workload import many_flows, measure, tcp_gbps, tcp_interleaved

CAPTURES = (("capture off", None),
            ("one capture, filter matching nothing", "icmp"),
            ("one capture, filter matching all", "tcp"))


def workers_sweep(duration: float) -> dict:
    """vswitch's many-flows throughput with 1, 2, ... forwarding threads."""
    out = {}
    saved = topology.DATAPATH
    try:
        for n in range(1, len(os.sched_getaffinity(0)) + 1):
            topology.DATAPATH = f"{saved}\nworkers = {n}"
            with vswitch_topology(pods=4) as pods:
                out[str(n)] = many_flows(pods, duration)["many_gbps"]
    finally:
        topology.DATAPATH = saved
    return out


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


ROWS = [("TCP throughput, 1 stream", "tcp_gbps", "Gbit/s", True),
        ("TCP throughput, 1 stream, IPv6", "tcp6_gbps", "Gbit/s", True),
        ("TCP throughput, 4 streams", "tcp4_gbps", "Gbit/s", True),
        ("64-byte UDP delivered (iperf3)", "udp64_kpps", "kpps", True),
        ("64-byte delivered flat out", "gen64_kpps", "kpps", True),
        ("64-byte rate with <1% loss", "gen64_1pct_kpps", "kpps", True),
        ("RTT, ping every 2 ms", "rtt_us", "us", False),
        ("RTT, ping back to back", "rtt_busy_us", "us", False),
        ("RTT, UDP request/response", "rr_us", "us", False)]
VICTIM_ROWS = [("TCP, 2 pod pairs x 4 streams at once", "many_gbps", "Gbit/s", True),
               ("  CPU (all cores) per Gbit forwarded", "many_cpu_ms_per_gbit", "ms", False),
               ("victim TCP while a neighbour floods", "victim_tcp_gbps", "Gbit/s", True),
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
    if "bridge" in results and results["bridge"]["vswitch"].get("many_top_worker_share"):
        lines.append(f"many flows: the busiest forwarding thread did "
                     f"{100 * results['bridge']['vswitch']['many_top_worker_share']:.0f}% of "
                     "the forwarding threads' CPU")
    if "workers_sweep" in results:
        lines += ["", "many flows (2 pod pairs x 4 streams) by forwarding threads (bridge mode)"]
        base = results["workers_sweep"]["1"]
        lines += [f"workers {n:>2}: {gbps:6.2f} Gbit/s  {gbps / base:5.2f}x one worker"
                  for n, gbps in results["workers_sweep"].items()]
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
    parser.add_argument("--workers-sweep", action="store_true",
                        help="also the many-flows workload with 1, 2, ... forwarding threads")
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
    topology.DATAPATH = "\n".join(args.datapath)
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
        if args.workers_sweep:
            results["workers_sweep"] = workers_sweep(args.duration)
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

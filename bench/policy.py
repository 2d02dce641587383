#!/usr/bin/env python3
"""NetworkPolicy's cost: two dual-stack pods on vswitchd, TCP throughput
over IPv4 and over IPv6 (iperf3, one stream, the median of five runs taken
in turn: one config's runs vary by about 10% on a small machine) and the
64-byte rate
(bench/pktgen.c flat out) with no policy, with a default deny plus 10
rules per direction, and with 1,000 rules per direction on each pod (the
allowing rule last, so that a new connection walks them all); the Linux
bridge's TCP in the same run as the kernel's reference. Established
traffic is checked by one conntrack lookup, so the goal is >= 0.9x of no
policy. Also a part of bench/run.py's table (section "policy").

    python3 bench/policy.py [--duration 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from topology import ADDR6_B, linux_bridge_topology, vswitch_topology  # noqa: E402
from workload import small_packets, tcp_gbps  # noqa: E402  (bench/ is not a package)

API = "networking.k8s.io/v1"


def policy(name: str, pod: str, direction: str, rules: list) -> dict:
    key = "ingress" if direction == "Ingress" else "egress"
    return {"apiVersion": API, "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"bench": pod}},
                     "policyTypes": [direction], key: rules}}


def rules(n: int, peers: str) -> list:
    """n rules: n - 1 that match nothing here (other /32s, other ports), then
    one allowing the bench's subnets on every port."""
    decoys = [{peers: [{"ipBlock": {"cidr": f"203.0.{i // 256 % 256}.{i % 256}/32"}}],
               "ports": [{"port": 10000 + i, "protocol": "UDP" if i % 2 else "TCP"}]}
              for i in range(n - 1)]
    return decoys + [{peers: [{"ipBlock": {"cidr": "198.18.0.0/16"}},
                              {"ipBlock": {"cidr": "2001:db8:18::/64"}}]}]


CONFIGS = {
    "no policy": [],
    "default deny + 10 rules": [
        {"apiVersion": API, "kind": "NetworkPolicy",
         "metadata": {"name": "deny-all", "namespace": "default"},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}},
        policy("in-10", "server", "Ingress", rules(10, "from")),
        policy("out-10", "client", "Egress", rules(10, "to"))],
    "1,000 rules per port": [
        policy("in-1000", "server", "Ingress", rules(1000, "from")),
        policy("out-1000", "client", "Egress", rules(1000, "to"))],
}


def use(ctl: list, name: str):
    """Make the policies of config `name` the node's (and forget connections)."""
    for p in json.loads(subprocess.run(ctl + ["policy", "list", "--json"], check=True,
                                       capture_output=True, text=True).stdout):
        subprocess.run(ctl + ["policy", "delete", f"{p['namespace']}/{p['name']}"], check=True,
                       capture_output=True)
    if CONFIGS[name]:
        subprocess.run(ctl + ["policy", "apply", "-f", "-"], input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": CONFIGS[name]}), check=True,
            capture_output=True, text=True)
    subprocess.run(ctl + ["conntrack", "flush"], check=True, capture_output=True)


def measure(duration: float, rounds: int = 5) -> dict:
    out: dict = {name: {"tcp_runs_gbps": [], "tcp6_runs_gbps": []} for name in CONFIGS}
    with vswitch_topology(with_ctl=True) as ((a, b), ctl), linux_bridge_topology() as (ka, kb):
        subprocess.run(ctl + ["port", "label", "va", "bench=client"], check=True,
                       capture_output=True)
        subprocess.run(ctl + ["port", "label", "vb", "bench=server"], check=True,
                       capture_output=True)
        kernel = []
        for _ in range(rounds):
            kernel.append(tcp_gbps(ka, kb, duration))
            for name in CONFIGS:
                use(ctl, name)
                out[name]["tcp_runs_gbps"].append(tcp_gbps(a, b, duration))
                out[name]["tcp6_runs_gbps"].append(tcp_gbps(a, b, duration, server_addr=ADDR6_B))
        for name in CONFIGS:
            use(ctl, name)
            out[name]["tcp_gbps"] = statistics.median(out[name]["tcp_runs_gbps"])
            out[name]["tcp6_gbps"] = statistics.median(out[name]["tcp6_runs_gbps"])
            out[name]["gen64_kpps"], out[name]["gen64_loss_pct"], _ = \
                small_packets(a, b, duration)
            stats = json.loads(subprocess.run(ctl + ["stats", "--json"], check=True,
                                              capture_output=True, text=True).stdout)
            out[name]["policy_denied"] = stats["drops"]["policy_denied"]
            out[name]["conntrack_entries"] = stats["conntrack"]["entries"]
        use(ctl, "no policy")
    base = out["no policy"]
    for name in CONFIGS:
        out[name]["tcp_ratio"] = out[name]["tcp_gbps"] / base["tcp_gbps"]
        out[name]["tcp6_ratio"] = out[name]["tcp6_gbps"] / base["tcp6_gbps"]
        out[name]["gen64_ratio"] = out[name]["gen64_kpps"] / base["gen64_kpps"]
    return {"configs": out, "linux_bridge_tcp_gbps": statistics.median(kernel)}


def table(r: dict) -> str:
    kernel = r["linux_bridge_tcp_gbps"]
    lines = ["NetworkPolicy (bench/policy.py): vswitch with policies vs without, and the "
             "Linux bridge's TCP",
             f"{'policies':26} {'TCP Gbit/s':>10} {'ratio':>6} {'/kernel':>8} "
             f"{'TCP6 Gbit/s':>11} {'ratio':>6} {'64B kpps':>9} {'ratio':>6}",
             "-" * 92]
    for name, c in r["configs"].items():
        lines.append(f"{name:26} {c['tcp_gbps']:>10.2f} {c['tcp_ratio']:>5.2f}x "
                     f"{c['tcp_gbps'] / kernel:>7.2f}x {c['tcp6_gbps']:>11.2f} "
                     f"{c['tcp6_ratio']:>5.2f}x {c['gen64_kpps']:>9.1f} "
                     f"{c['gen64_ratio']:>5.2f}x")
    lines.append(f"{'Linux bridge (no policy)':26} {kernel:>10.2f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per workload")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (it creates namespaces and TAP devices)")
    results = measure(args.duration)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

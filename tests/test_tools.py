"""The README's demo and the benchmark harness keep working."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_shows_two_pods_talking():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), "--no-install"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "3 received, 0% packet loss" in r.stdout
    assert re.search(r"[\d.]+ Gbits/sec\s+receiver", r.stdout)
    # Pod a joined through the CNI plugin (its port is named after the
    # container), pod b by hand.
    assert re.search(r'"ips": \[\{"address": "198\.18\.1\.\d+/16"', r.stdout)
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()
            if line.startswith(("pod-", "vsdemo"))}
    pod_a = next(name for name in rows if name.endswith("-eth0"))
    assert int(rows[pod_a][1]) > 1000 and int(rows["pod-b"][4]) > 1000   # RX_PKTS, TX_PKTS
    assert "vsdemo" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout


def test_bench_prints_ratios_json_and_chart(tmp_path):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--duration", "1",
                        "--json", str(out), "--png", str(png), "--scale-ports", "5",
                        "--scale-macs", "500", "--cluster-nodes", "3"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "bridge mode: vswitch vs linux bridge" in r.stdout
    assert "overlay mode: vswitch vs kernel vxlan" in r.stdout
    assert "one capture, filter matching nothing" in r.stdout
    assert "victim TCP while a neighbour floods" in r.stdout
    results = json.loads(out.read_text())
    for mode, ref in (("bridge", "linux_bridge"), ("overlay", "kernel_vxlan")):
        for side in ("vswitch", ref):
            row = results[mode][side]
            assert row["tcp_gbps"] > 0 and row["tcp4_gbps"] > 0 and row["rtt_us"] > 0
            assert row["gen64_kpps"] > 0 and 0 <= row["gen64_loss_pct"] < 100
            assert row["gen64_1pct_kpps"] > 0       # (two measured rates: never compared)
            assert row["rr_tps"] > 0 and row["rr_us"] > 0
        assert results[mode]["ratio"]["tcp_gbps"] == \
            results[mode]["vswitch"]["tcp_gbps"] / results[mode][ref]["tcp_gbps"]
    assert results["bridge"]["vswitch"]["victim_tcp_gbps"] > 0
    for other, binary in (("vde_switch", "vde_switch"), ("ovs_userspace", "ovs-vswitchd")):
        if shutil.which(binary):                  # install-deps installs both
            assert results["bridge"][other]["tcp_gbps"] > 0
            assert f" {other}" in r.stdout
    assert set(results["micro"]["per_frame_ns"]) == {"1000", "100000", "1000000"}
    assert results["scale"]["rss_idle_mb"] > 0
    assert "cluster mode (bench/cluster.py)" in r.stdout
    assert results["cluster"]["sizes"]["3"]["programmed_s"] is not None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_restart_bench_measures_the_outage(tmp_path):
    out = tmp_path / "restart.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "restart.py"), "--rounds", "1",
                        "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    for how in ("sigterm", "sigkill"):
        [row] = results[how]
        # The pods were off the network for a while and came back: the
        # measured silence is real (above the ping interval) and ended.
        assert 1 < row["outage_ms"] < 60000 and row["restart_ms"] > 0
    assert "vb" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                      text=True).stdout


def test_micro_bench_runs(tmp_path):
    out = tmp_path / "micro.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "micro.py"), "--frames", "2000",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    for row in results["per_frame_ns"].values():
        assert row["cython"] > 0 and row["python"] > 0
    assert set(results["flood_ns"]) == {"2", "16", "128", "512"}
    for key in ("encap_ns", "decap_ns", "segment_ns"):
        row = results[key]
        assert row["cython"] > 0 and row["python"] > 0 and row["scapy"] > 0
    assert results["segment_ns"]["segments"] == 47


def test_pytest_benchmarks_run():
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--benchmark-disable", str(ROOT / "bench" / "test_micro_benchmark.py")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "11 passed" in r.stdout


def test_cluster_bench_measures_convergence_memory_writes_and_arp(tmp_path):
    out = tmp_path / "cluster.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "cluster.py"), "--nodes", "5", "20",
                        "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    for n in ("5", "20"):
        row = results["sizes"][n]
        assert row["programmed_s"] < 10 and 0 < row["ping_s"] < 30
        assert row["remote_pods"] == int(n) * 30 and row["kb_per_remote_pod"] is not None
        assert row["connected_throughout"] and 0 < row["applied_s"] and row["relists"] == 0
        assert row["loop_lag_ms"] >= 0
        assert all(u["rss_mb"] > 0 and u["cpu_s"] > 0 for u in row["usage"].values())
    assert results["etcd_writes"]["revisions_per_add"] >= 1       # the endpoint, at least
    on, off = results["arp_with_suppression"], results["arp_without_suppression"]
    assert on["first_contacts"] == off["first_contacts"] == 6
    assert on["arp_frames_on_underlay"] < off["arp_frames_on_underlay"]
    assert on["icmp_frames_on_underlay"] > 0 and off["icmp_frames_on_underlay"] > 0
    assert "programmed" in r.stdout and "etcd writes per ADD" in r.stdout


def test_scale_bench_runs(tmp_path):
    out = tmp_path / "scale.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--ports", "20",
                        "--macs", "5000", "--json", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    assert results["fdb_entries"] >= 4000          # learned, save what the pod's queue lost
    assert all(results[k] > 0 for k in ("rss_idle_mb", "rss_20_ports_mb", "rss_20_ports_5000_macs_mb"))


def test_cluster_demo_shows_pods_on_three_nodes_talking():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "cluster-demo.sh"), "--no-install"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert r.stdout.count("3 received, 0% packet loss") == 2
    assert re.search(r"node2 \(this\)\s+alive\s+192\.0\.2\.2\s+pods:198\.18\.", r.stdout)
    assert "cluster demo done" in r.stdout
    assert "vscl" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                        text=True).stdout

"""Per-port rate limits (token buckets in the data plane), set with
`vswitchctl port set` or the CNI bandwidth capability, kept across restarts."""

from __future__ import annotations

from helpers import Runtime, tcp_bps


def test_port_set_limits_a_pod_and_counts_the_drops(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    info = d.ctl_json("port", "set", "pod-a", "--ingress-rate", "10M")
    assert info["rates"] == {"ingress_rate": 10_000_000}
    limited = tcp_bps(p["a"][0], p["b"][0], "198.18.0.2")
    assert 0 < limited < 20e6          # 10 Mbit/s plus what the burst lets through
    assert d.ctl_json("stats")["drops"]["rate_limited"] > 0
    # Egress towards pod-b limits what pod-a can send it too; 0 lifts a limit.
    d.ctl("port", "set", "pod-a", "--ingress-rate", "0")
    d.ctl("port", "set", "pod-b", "--egress-rate", "10M", "--egress-burst", "1M")
    assert tcp_bps(p["a"][0], p["b"][0], "198.18.0.2") < 20e6
    d.ctl("port", "set", "pod-b", "--egress-rate", "0")
    assert tcp_bps(p["a"][0], p["b"][0], "198.18.0.2") > 100e6
    for bad in (["--ingress-rate", "-5"], ["--egress-rate", "fast"]):
        assert d.ctl("port", "set", "pod-a", *bad, check=False).returncode != 0
    assert d.ctl("port", "set", "nope", "--ingress-rate", "1M", check=False).returncode == 1


def test_rates_survive_a_restart(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    d.ctl("port", "set", "pod-a", "--ingress-rate", "10M", "--ingress-burst", "512k")
    d.stop()
    d2 = vswitchd(state_dir=d.state_dir)
    assert d2.ctl_json("port", "show", "pod-a")["rates"] == {"ingress_rate": 10_000_000,
                                                             "ingress_burst": 512_000}
    assert tcp_bps(p["a"][0], p["b"][0], "198.18.0.2") < 20e6


def test_cni_bandwidth_capability(vswitchd, netns, cni_path):  # noqa: F811
    d = vswitchd()
    rt = Runtime(cni_path, d)
    bandwidth = {"ingressRate": 5_000_000, "ingressBurst": 4_000_000, "egressRate": 2_000_000}
    rt.add(netns("a"), "ctr-a", conf={"runtimeConfig": {"bandwidth": bandwidth}})
    [port] = d.ctl_json("port", "list")
    # The pod's ingress is what the switch sends it: the port's egress.
    assert port["rates"] == {"egress_rate": 5_000_000, "egress_burst": 4_000_000,
                             "ingress_rate": 2_000_000}
    rc, err = rt.run("ADD", netns("b"), "ctr-b",
                     conf={"runtimeConfig": {"bandwidth": {"ingressRate": -1}}})
    assert rc != 0 and err["code"] == 7

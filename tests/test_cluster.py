"""Cluster mode against a real etcd (Debian's etcd-server): nodes are
namespaces on one underlay (192.0.2.0/24, a bridge in a hub namespace that
also runs etcd on 192.0.2.250), each with its own vswitchd configured with
nothing but its name, its VTEP and the etcd endpoints."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Capture, Daemon, in_ns, sh, write_toml
from test_bridge import ping
from test_overlay import UNDERLAY

from vswitch.client import ClientError

ETCD_IP = f"{UNDERLAY}.250"
POD_SUBNET = "198.18.0.0/16"


def wait_for(what, condition, timeout=10.0, interval=0.02):
    """Poll condition() until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Etcd:
    """etcd members in the hub namespace, each with its own data directory."""

    def __init__(self, hub: str, tmp: Path, members: int = 1, tls: dict | None = None):
        self.hub, self.tmp, self.tls = hub, tmp, tls or {}
        self.names = [f"m{i}" for i in range(members)]
        self.procs: dict[str, subprocess.Popen] = {}
        scheme = "https" if tls else "http"
        self.urls = {n: f"{scheme}://{ETCD_IP}:{2379 + 2 * i}" for i, n in enumerate(self.names)}
        self.peer_urls = {n: f"http://{ETCD_IP}:{2380 + 2 * i}" for i, n in enumerate(self.names)}
        self.cluster = ",".join(f"{n}={u}" for n, u in self.peer_urls.items())
        self.token = "vt" + secrets.token_hex(4)
        for name in self.names:
            self.start(name, new=True)
        for name in self.names:
            self.wait_healthy(name)

    def start(self, name: str, new: bool = False):
        args = ["etcd", "--name", name, "--data-dir", str(self.tmp / f"etcd-{name}"),
                "--listen-client-urls", self.urls[name], "--advertise-client-urls", self.urls[name],
                "--listen-peer-urls", self.peer_urls[name],
                "--initial-advertise-peer-urls", self.peer_urls[name],
                "--initial-cluster", self.cluster, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new"]
        if self.tls:
            args += ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                     "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]
        self.procs[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.hub, *args], stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"etcd-{name}.log", "a"))

    def etcdctl(self, *args, check=True) -> subprocess.CompletedProcess:
        env = {**os.environ, "ETCDCTL_API": "3"}
        tls = ["--cacert", self.tls["ca"], "--cert", self.tls["cert"], "--key", self.tls["key"]] \
            if self.tls else []
        return subprocess.run(["ip", "netns", "exec", self.hub, "etcdctl", "--endpoints",
                               ",".join(self.urls[n] for n in self.procs), *tls, *args],
                              capture_output=True, text=True, timeout=30, env=env, check=check)

    def wait_healthy(self, name: str):
        wait_for(f"etcd member {name}", lambda: self.etcdctl(
            "--endpoints", self.urls[name], "endpoint", "health", check=False).returncode == 0,
            timeout=20, interval=0.1)

    def stop(self, name: str | None = None):
        for n in [name] if name else list(self.procs):
            proc = self.procs.pop(n)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def get(self, key: str):
        out = self.etcdctl("get", key, "--print-value-only").stdout.strip()
        return json.loads(out) if out else None

    def keys(self, prefix: str) -> list[str]:
        return self.etcdctl("get", prefix, "--prefix", "--keys-only").stdout.split()


@pytest.fixture
def cluster(netns, tmp_path):
    """A hub namespace with the underlay bridge and etcd; node(i, ...) starts
    a vswitchd in a new namespace 192.0.2.i; pod(node, tag) attaches a pod
    through the daemon's CNI API; etcd(members=N, tls=...) starts etcd."""
    hub = netns("ul")
    in_ns(hub, "ip", "link", "add", "ul", "type", "bridge")
    in_ns(hub, "ip", "addr", "add", f"{ETCD_IP}/24", "dev", "ul")
    in_ns(hub, "ip", "link", "set", "ul", "up")
    state: dict = {"etcd": None, "daemons": [], "namespaces": {}}

    class Cluster:
        hub_ns = hub

        @staticmethod
        def etcd(members=1, tls=None) -> Etcd:
            state["etcd"] = Etcd(hub, tmp_path, members, tls)
            return state["etcd"]

        @staticmethod
        def node_ns(i: int) -> str:
            if i not in state["namespaces"]:
                ns = netns(f"n{i}")
                in_ns(hub, "ip", "link", "add", f"ul{i}", "type", "veth", "peer", "name", "u0",
                      "netns", ns)
                in_ns(hub, "ip", "link", "set", f"ul{i}", "master", "ul", "up")
                in_ns(ns, "ip", "addr", "add", f"{UNDERLAY}.{i}/24", "dev", "u0")
                in_ns(ns, "ip", "link", "set", "u0", "up")
                state["namespaces"][i] = ns
            return state["namespaces"][i]

        @staticmethod
        def config(i: int, **cluster_keys) -> Path:
            path = tmp_path / f"node{i}.toml"
            etcd = state["etcd"]
            keys = {"etcd": [etcd.urls[n] for n in etcd.names], "lease_ttl": 3, **cluster_keys}
            write_toml(path, {"node": {"name": f"node{i}", "socket": str(tmp_path / f"n{i}.sock"),
                                       "state_dir": str(tmp_path / f"state{i}")},
                              "overlay": {"vtep_ip": f"{UNDERLAY}.{i}"}, "cluster": keys})
            return path

        @staticmethod
        def node(i: int, config: Path | None = None, **cluster_keys) -> Daemon:
            ns = Cluster.node_ns(i)
            path = config or Cluster.config(i, **cluster_keys)
            d = Daemon(path, str(tmp_path / f"n{i}.sock"), tmp_path / f"node{i}.log", ns)
            d.ns, d.name = ns, f"node{i}"
            state["daemons"].append(d)
            return d

        @staticmethod
        def pod(d: Daemon, tag: str, network: str = "blue") -> dict:
            ns = netns(tag)
            r = d.client.attach(f"c{RUN}{tag}", "eth0", f"/run/netns/{ns}", network=network)
            r["ns"] = ns
            return r

    yield Cluster
    for d in state["daemons"]:
        d.stop()
    if state["etcd"]:
        state["etcd"].stop()


RUN = secrets.token_hex(4)


def ip_of(pod: dict) -> str:
    return pod["ip"].split("/")[0]


def peers(d: Daemon) -> set[str]:
    return {p["ip"] for p in d.ctl_json("peer", "list")}


def three_nodes(cluster, **keys):
    cluster.etcd()
    nodes = [cluster.node(i, **keys) for i in (1, 2, 3)]
    nodes[0].ctl("network", "create", "blue", "--vni", "100", "--subnet", POD_SUBNET,
                 "--block-size", "26")
    for d in nodes:
        wait_for("network everywhere", lambda d=d: any(
            n["joined"] for n in d.ctl_json("network", "list")))
    return nodes


def test_three_nodes_get_blocks_and_pods_talk_with_no_peers_configured(cluster):
    nodes = three_nodes(cluster)
    for d in nodes:
        others = {f"{UNDERLAY}.{i}" for i in (1, 2, 3)} - {d.ctl_json("status")["vtep"]}
        wait_for("peers", lambda d=d, others=others: peers(d) == others)
    p = {t: cluster.pod(d, t) for t, d in zip("abc", nodes)}
    blocks = {b["node"]: b["block"] for b in nodes[0].ctl_json("ipam", "blocks")}
    assert sorted(blocks) == ["node1", "node2", "node3"]
    import ipaddress
    for t, d in zip("abc", nodes):
        block = ipaddress.IPv4Network(blocks[d.name])
        assert block.prefixlen == 26 and ipaddress.IPv4Address(ip_of(p[t])) in block
    for src, dst in (("a", "b"), ("b", "c"), ("c", "a")):
        assert " 0% packet loss" in ping(p[src]["ns"], ip_of(p[dst])).stdout
    listing = {n["name"]: n for n in nodes[1].ctl_json("node", "list")}
    assert {n: (v["state"], v["pods"]) for n, v in listing.items()} == \
        {f"node{i}": ("alive", 1) for i in (1, 2, 3)}
    status = nodes[2].ctl_json("cluster", "status")
    assert status["connected"] and status["can_allocate"] and status["revision"] > 0
    assert status["endpoints"] == 3 and status["nodes"] == 3
    # Remote pods' MACs are in the FDB ahead of traffic, behind their node.
    fdb = {e["mac"]: e["port"] for e in nodes[0].ctl_json("fdb", "show")}
    assert fdb[p["b"]["mac"]] == f"vxlan:{UNDERLAY}.2" and fdb[p["c"]["mac"]] == f"vxlan:{UNDERLAY}.3"
    text = nodes[0].ctl("cluster", "status").stdout
    assert "connected to" in text and "can allocate yes" in text

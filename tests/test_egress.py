"""Pods reach the outside world through their node: a "world" namespace
beside the node, reachable only through the node's uplink. Egress to it is
masqueraded to the node's address by rules in vswitch's own nftables
table; traffic between pods and to the node keeps the pods' addresses; the
rules follow the config on reload, come back after a SIGKILL and go when
vswitchd stops."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import Daemon, in_ns, write_toml

WORLD, UPLINK = "203.0.113.1", "203.0.113.2"
GATEWAY = "198.18.20.254"
# Answers each TCP connection with the address it came from.
WHO = ("import socket,sys\n"
       "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
       "s.bind((sys.argv[1], 8080)); s.listen(); print('ready', flush=True)\n"
       "while True:\n"
       "    c, a = s.accept(); c.sendall(a[0].encode()); c.close()\n")


def who_am_i(ns: str, server: str) -> str | None:
    """The source address server sees for a connection from ns (None: no answer)."""
    r = in_ns(ns, sys.executable, "-c",
              f"import socket\ns=socket.create_connection(('{server}',8080),timeout=2)\n"
              "print(s.recv(100).decode())", check=False)
    return r.stdout.strip() or None


def nft_table(ns: str) -> str:
    return in_ns(ns, "nft", "list", "ruleset").stdout


@pytest.fixture
def site(netns, tmp_path):
    """A node namespace (vswitchd in it, host port vsweg0, uplink up0) and
    a world namespace (WORLD) on the other end of the uplink."""
    node, world = netns("node"), netns("world")
    in_ns(node, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "wd0", "netns", world)
    in_ns(node, "ip", "addr", "add", f"{UPLINK}/24", "dev", "up0")
    in_ns(node, "ip", "link", "set", "up0", "up")
    in_ns(node, "ip", "route", "add", "default", "via", WORLD)
    in_ns(world, "ip", "addr", "add", f"{WORLD}/24", "dev", "wd0")
    in_ns(world, "ip", "link", "set", "wd0", "up")
    servers = []

    def serve(ns: str, address: str):
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", WHO, address],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        servers.append(p)

    network = {"name": "blue", "vni": 100, "subnet": "198.18.0.0/16", "block": "198.18.20.0/24",
               "gateway": GATEWAY, "host_port": "vsweg0", "mtu": 1500}
    config = {"node": {"name": "eg", "socket": str(tmp_path / "eg.sock"),
                       "state_dir": str(tmp_path / "state")}, "network": [network]}
    path = tmp_path / "eg.toml"
    write_toml(path, config)
    daemons = []

    def start() -> Daemon:
        d = Daemon(path, config["node"]["socket"], tmp_path / "eg.log", node)
        daemons.append(d)
        return d

    class Site:
        pass
    s = Site()
    s.node, s.world, s.serve, s.start, s.path = node, world, serve, start, path
    s.config, s.network = config, network
    yield s
    for p in servers:
        p.kill()
        p.wait()
    for d in daemons:
        d.stop()


def test_pods_reach_the_world_masqueraded_and_each_other_and_the_node_as_themselves(site, netns):
    d = site.start()
    status = d.ctl_json("status")["masquerade"]
    # A fresh namespace does not forward: status says what is missing, and how to fix it.
    assert status["networks"] == ["blue"] and status["error"] is None
    assert any("net.ipv4.conf.up0.forwarding is 0" in w for w in status["warnings"]), status
    in_ns(site.node, "sysctl", "-qw", "net.ipv4.conf.up0.forwarding=1")
    pods = {}
    for tag, last in (("a", 1), ("b", 2)):
        ns = netns(tag)
        d.ctl("port", "add", f"pod-{tag}", "--netns", ns, "--ip", f"198.18.20.{last}/16")
        pods[tag] = ns
    site.serve(site.world, WORLD)
    site.serve(pods["b"], "198.18.20.2")
    site.serve(site.node, GATEWAY)
    assert who_am_i(pods["a"], WORLD) == UPLINK            # masqueraded to the node's address
    assert who_am_i(pods["a"], "198.18.20.2") == "198.18.20.1"     # pod to pod: its own
    assert who_am_i(pods["a"], GATEWAY) == "198.18.20.1"           # pod to node: its own
    r = in_ns(pods["b"], "ping", "-c", "2", "-i", "0.2", "-W", "2", WORLD, check=False)
    assert " 0% packet loss" in r.stdout
    rules = nft_table(site.node)
    assert "table ip vswitch" in rules and 'masquerade comment "network blue"' in rules
    assert "198.18.0.0/16" in rules
    # Off on reload: the table goes, and the world gets no answer back.
    write_toml(site.path, {**site.config, "network": [{**site.network, "masquerade": False}]})
    assert d.ctl_json("reload")["changes"] == ["masquerade: none"]
    assert "vswitch" not in nft_table(site.node)
    assert who_am_i(pods["a"], WORLD) is None
    assert who_am_i(pods["a"], "198.18.20.2") == "198.18.20.1"
    write_toml(site.path, site.config)
    assert d.ctl_json("reload")["changes"] == ["masquerade: blue"]
    assert who_am_i(pods["a"], WORLD) == UPLINK
    # SIGKILL leaves the table; the next start writes it again, a stop removes it.
    d.proc.kill()
    d.proc.wait()
    assert "table ip vswitch" in nft_table(site.node)
    d = site.start()
    assert who_am_i(pods["a"], WORLD) == UPLINK
    assert d.ctl_json("status")["masquerade"]["warnings"] == []
    d.ctl("stop", "--remove-ports")
    d.proc.wait(10)
    assert "vswitch" not in nft_table(site.node)


def test_a_stale_table_from_a_killed_daemon_goes_when_the_config_no_longer_masquerades(site):
    in_ns(site.node, "nft", "add", "table", "ip", "vswitch")       # as a killed vswitchd left it
    write_toml(site.path, {**site.config, "network": [{**site.network, "masquerade": False}]})
    d = site.start()
    assert "vswitch" not in nft_table(site.node)
    assert d.ctl_json("status")["masquerade"] == {"networks": [], "error": None, "warnings": []}

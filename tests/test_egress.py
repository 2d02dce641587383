"""Pods reach the outside world through their node: a "world" namespace
beside the node, reachable only through the node's uplink. Egress to it is
masqueraded to the node's address by rules in vswitch's own nftables
table; traffic between pods and to the node keeps the pods' addresses; the
rules follow the config on reload, come back after a SIGKILL and go when
vswitchd stops."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ETCD_IP, UNDERLAY, Daemon, in_ns, write_toml
from helpers import wait_for

WORLD, UPLINK = "203.0.113.1", "203.0.113.2"
WORLD6, UPLINK6 = "2001:db8:ff::1", "2001:db8:ff::2"
GATEWAY = "198.18.20.254"
# Answers each TCP connection with the address it came from (and a name, if given).
WHO = ("import socket,sys\n"
       "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
       "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
       "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); print('ready', flush=True)\n"
       "tag = ' ' + sys.argv[3] if len(sys.argv) > 3 else ''\n"
       "while True:\n"
       "    c, a = s.accept(); c.sendall((a[0] + tag).encode()); c.close()\n")


def who_am_i(ns: str, server: str, port: int = 8080) -> str | None:
    """The source address server sees for a connection from ns (None: no answer)."""
    r = in_ns(ns, sys.executable, "-c",
              f"import socket\ns=socket.create_connection(('{server}',{port}),timeout=2)\n"
              "print(s.recv(100).decode())", check=False)
    return r.stdout.strip() or None


def serve_who(ns: str, address: str, port: int = 8080, tag: str = "") -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", WHO, address,
                          str(port), *([tag] if tag else [])], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def nft_table(ns: str) -> str:
    return in_ns(ns, "nft", "list", "ruleset").stdout


@pytest.fixture
def site(netns, tmp_path):
    """A node namespace (vswitchd in it, host port vsweg0, uplink up0) and
    a world namespace (WORLD) on the other end of the uplink."""
    node, world = netns("node", True), netns("world", True)
    in_ns(node, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "wd0", "netns", world)
    in_ns(node, "ip", "addr", "add", f"{UPLINK}/24", "dev", "up0")
    in_ns(node, "ip", "addr", "add", f"{UPLINK6}/64", "dev", "up0", "nodad")
    in_ns(node, "ip", "link", "set", "up0", "up")
    in_ns(node, "ip", "route", "add", "default", "via", WORLD)
    in_ns(node, "ip", "-6", "route", "add", "default", "via", WORLD6)
    in_ns(world, "ip", "addr", "add", f"{WORLD}/24", "dev", "wd0")
    in_ns(world, "ip", "addr", "add", f"{WORLD6}/64", "dev", "wd0", "nodad")
    in_ns(world, "ip", "link", "set", "wd0", "up")
    servers = []

    def serve(ns: str, address: str, port: int = 8080):
        servers.append(serve_who(ns, address, port))

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
    assert any("net.ipv4.conf.all.send_redirects is 1" in w for w in status["warnings"]), status
    in_ns(site.node, "sysctl", "-qw", "net.ipv4.conf.up0.forwarding=1",
          "net.ipv4.conf.all.send_redirects=0")
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
    # A second masquerading network comes and goes with its rule; blue's stays.
    red = {"name": "red", "vni": 200, "subnet": "198.19.0.0/16", "host_port": "vswer0",
           "mtu": 1500}
    write_toml(site.path, {**site.config, "network": [site.network, red]})
    assert d.ctl_json("reload")["changes"] == ["network red added", "masquerade: blue, red"]
    rules = nft_table(site.node)
    assert 'comment "network red"' in rules and "198.18.0.0/15" in rules    # both excluded
    write_toml(site.path, site.config)
    assert d.ctl_json("reload")["changes"] == ["network red removed", "masquerade: blue"]
    rules = nft_table(site.node)
    assert 'comment "network red"' not in rules and 'comment "network blue"' in rules
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


def test_dual_stack_pods_reach_the_world_over_ipv6_masqueraded(site, netns):
    """A dual-stack network masquerades IPv6 too (table ip6 vswitch), and
    status names the node's missing IPv6 forwarding."""
    write_toml(site.path, {**site.config, "network": [{**site.network,
                                                       "subnet6": "2001:db8:18::/64"}]})
    d = site.start()
    warnings = d.ctl_json("status")["masquerade"]["warnings"]
    assert any("net.ipv6.conf.all.forwarding is 0" in w for w in warnings), warnings
    in_ns(site.node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1",
          "net.ipv4.conf.up0.forwarding=1")
    pods = {}
    for tag, last in (("a", 1), ("b", 2)):
        pods[tag] = netns(tag, True)
        d.ctl("port", "add", f"pod-{tag}", "--netns", pods[tag], "--ip", f"198.18.20.{last}/16",
              "--ip", f"2001:db8:18::1{last}/64")
    site.serve(site.world, WORLD6)
    site.serve(site.world, WORLD)
    site.serve(pods["b"], "2001:db8:18::12")
    assert who_am_i(pods["a"], WORLD6) == UPLINK6                      # masqueraded
    assert who_am_i(pods["a"], "2001:db8:18::12") == "2001:db8:18::11"   # pod to pod: its own
    assert who_am_i(pods["a"], WORLD) == UPLINK                      # and IPv4 as before
    rules = in_ns(site.node, "nft", "list", "table", "ip6", "vswitch").stdout
    assert 'ip6 saddr 2001:db8:18::/64 ip6 daddr != 2001:db8:18::/64 masquerade' in rules
    d.ctl("stop", "--remove-ports")
    d.proc.wait(10)
    assert "vswitch" not in nft_table(site.node)

def test_a_stale_table_from_a_killed_daemon_goes_when_the_config_no_longer_masquerades(site):
    in_ns(site.node, "nft", "add", "table", "ip", "vswitch")       # as a killed vswitchd left it
    write_toml(site.path, {**site.config, "network": [{**site.network, "masquerade": False}]})
    d = site.start()
    assert "vswitch" not in nft_table(site.node)
    assert d.ctl_json("status")["masquerade"] == {"networks": [], "error": None, "warnings": []}


def test_host_port_through_the_example_conflists_portmap(site, netns, tmp_path):
    """examples/10-vswitch.conflist, run as a runtime runs a chain (in the
    node's namespace, where portmap writes its rules): the world reaches a
    pod at the node's address and sees the pod's answer; DEL undoes it."""
    d = site.start()
    in_ns(site.node, "sysctl", "-qw", "net.ipv4.conf.up0.forwarding=1")
    conflist = json.loads((Path(__file__).parent.parent / "examples/10-vswitch.conflist")
                          .read_text())
    bin_dir = tmp_path / "cni"
    bin_dir.mkdir()
    (bin_dir / "vswitch").symlink_to(shutil.which("vswitch-cni"))
    pod = netns("hp")
    env = {"PATH": os.environ["PATH"], "CNI_CONTAINERID": "hp-ctr", "CNI_IFNAME": "eth0",
           "CNI_NETNS": f"/run/netns/{pod}", "CNI_PATH": f"{bin_dir}:/usr/lib/cni"}
    runtime_config = {"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                        "protocol": "tcp"}]}

    def run(command: str, plugin: dict, prev=None):
        conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
        if plugin["type"] == "vswitch":
            conf.update(network="blue", socket=d.socket)
        if "portMappings" in plugin.get("capabilities", {}):
            conf["runtimeConfig"] = runtime_config
        if prev is not None:
            conf["prevResult"] = prev
        r = subprocess.run(["ip", "netns", "exec", site.node,
                            str(bin_dir / "vswitch") if plugin["type"] == "vswitch"
                            else f"/usr/lib/cni/{plugin['type']}"],
                           input=json.dumps(conf), env={**env, "CNI_COMMAND": command},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (plugin["type"], r.stdout, r.stderr)
        return json.loads(r.stdout) if r.stdout.strip() else None

    result = None
    for plugin in conflist["plugins"]:
        result = run("ADD", plugin, result)
    pod_ip = result["ips"][0]["address"].split("/")[0]
    site.serve(pod, "0.0.0.0", 80)
    assert who_am_i(site.world, UPLINK, 8080) == WORLD      # the pod sees who called
    assert who_am_i(site.node, pod_ip, 80) == GATEWAY        # and the node reaches it directly
    for plugin in reversed(conflist["plugins"]):
        run("DEL", plugin, result)
    assert who_am_i(site.world, UPLINK, 8080) is None
    assert d.ctl_json("ipam", "show")["allocations"] == []


def test_a_network_without_mtu_takes_its_underlays(netns, tmp_path):
    """Overlay: the VTEP interface's MTU less 50; bridge: the uplink's. The
    choice is in status and in the log, and pods get it."""
    node, other = netns("mtu"), netns("mtuo")
    in_ns(node, "ip", "link", "add", "u0", "mtu", "9000", "type", "veth", "peer", "name", "u1",
          "netns", other)
    in_ns(node, "ip", "addr", "add", "192.0.2.41/24", "dev", "u0")
    in_ns(node, "ip", "link", "set", "u0", "up")
    in_ns(node, "ip", "route", "add", "default", "via", "192.0.2.42")
    network = {"name": "blue", "vni": 100, "subnet": "198.18.0.0/16"}
    for mode, expected, source in (
            ("overlay", 8950, "overlay.underlay_mtu 9000 (interface u0) less 50 of VXLAN"),
            ("bridge", 9000, "interface u0")):
        sock = str(tmp_path / f"{mode}.sock")
        config = {"node": {"name": mode, "socket": sock, "mode": mode,
                           "state_dir": str(tmp_path / mode)}, "network": [network]}
        if mode == "overlay":
            config["overlay"] = {"vtep_ip": "192.0.2.41"}
        write_toml(tmp_path / f"{mode}.toml", config)
        d = Daemon(tmp_path / f"{mode}.toml", sock, tmp_path / f"{mode}.log", node)
        try:
            assert d.ctl_json("status")["mtu"] == {"blue": {"mtu": expected, "from": source}}
            assert f"(mtu {expected})" in d.ctl("status").stdout
            pod = netns(f"p{mode[0]}")
            d.ctl("port", "add", "p", "--netns", pod, "--ip", "198.18.9.1/16")
            assert f"mtu {expected} " in in_ns(pod, "ip", "link", "show", "eth0").stdout
        finally:
            d.stop()
        assert f"network blue: mtu {expected}, from {source}" in (tmp_path / f"{mode}.log").read_text()


KUBE_PROXY = """table ip kube-test {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 198.19.255.10 tcp dport 80 dnat to 198.18.20.2:8080
    ip daddr 198.19.255.11 tcp dport 80 dnat to 198.18.20.1:8080
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 198.18.20.1 ip daddr 198.18.20.1 masquerade
  }
}
"""


def test_a_cluster_ip_with_a_backend_on_the_same_network_and_hairpin(site, netns, tmp_path):
    """Service rules as kube-proxy's nftables mode writes them, in the
    node's namespace: the backend sees the client's own address, and its
    replies go back through the host port (the data plane steers them) to
    be un-NATed, so the client gets its answer from the ClusterIP. A pod
    reaching itself through a Service (hairpin: kube-proxy masquerades it)
    works too."""
    d = site.start()
    pods = {}
    for tag, last in (("a", 1), ("b", 2)):
        pods[tag] = netns(tag)
        d.ctl("port", "add", f"pod-{tag}", "--netns", pods[tag], "--ip", f"198.18.20.{last}/16")
        site.serve(pods[tag], "0.0.0.0", 8080)
    rules = tmp_path / "kube.nft"
    rules.write_text(KUBE_PROXY)
    in_ns(site.node, "nft", "-f", str(rules))
    assert who_am_i(pods["a"], "198.19.255.10", 80) == "198.18.20.1"    # b saw a itself
    assert d.ctl_json("stats")["gateway_replies"] >= 2                 # b's SYN-ACK and answer
    assert who_am_i(pods["a"], "198.19.255.11", 80) == GATEWAY         # hairpin
    assert who_am_i(pods["b"], "198.18.20.1", 8080) == "198.18.20.2"   # pod to pod: as before
    # While a connection is open, trace shows b's replies going back to the gateway.
    hold = subprocess.Popen(["ip", "netns", "exec", pods["a"], sys.executable, "-c",
                             "import socket,time\ns=socket.create_connection(('198.19.255.10',80))"
                             "\nprint(s.getsockname()[1], flush=True); time.sleep(30)"],
                            stdout=subprocess.PIPE, text=True)
    try:
        sport = int(hold.stdout.readline())
        b = d.ctl_json("port", "show", "pod-b")
        trace = d.ctl_json("trace", "--in-port", "pod-b", "--scapy",
                           f"Ether(src='{b['mac']}',dst='02:00:00:00:00:01')/IP(src='198.18.20.2',"
                           f"dst='198.18.20.1')/TCP(sport=8080,dport={sport},flags='A')")
        assert trace["steps"][-2]["step"] == "gateway_reply", trace
        assert trace["steps"][-1]["ports"] == ["host-blue"]
    finally:
        hold.kill()
        hold.wait()
    steered = [c for c in d.ctl_json("conntrack", "show", "--port", "pod-b")
               if c["in_port"] == "host-blue"]
    assert steered and steered[0]["destination"] == "198.18.20.2"


def kube_proxy_service6(cluster_ip: str, backend: str) -> str:
    return f"""table ip6 kube-test {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip6 daddr {cluster_ip} tcp dport 80 dnat to [{backend}]:8080
  }}
}}
"""


def test_an_ipv6_cluster_ip_with_a_backend_on_the_same_network(site, netns, tmp_path):
    """The same over IPv6: the backend's replies are steered back through
    the host port, so the client gets its answer from the ClusterIP."""
    write_toml(site.path, {**site.config, "network": [{**site.network,
                                                       "subnet6": "2001:db8:18::/64"}]})
    d = site.start()
    in_ns(site.node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    pods = {}
    for tag, last in (("a", 1), ("b", 2)):
        pods[tag] = netns(tag, True)
        d.ctl("port", "add", f"pod-{tag}", "--netns", pods[tag], "--ip", f"198.18.20.{last}/16",
              "--ip", f"2001:db8:18::1{last}/64")
    site.serve(pods["b"], "::", 8080)
    rules = tmp_path / "kube6.nft"
    rules.write_text(kube_proxy_service6("fd00:96::10", "2001:db8:18::12"))
    in_ns(site.node, "nft", "-f", str(rules))
    before = d.ctl_json("stats")["gateway_replies"]
    assert who_am_i(pods["a"], "fd00:96::10", 80) == "2001:db8:18::11"   # b saw a itself
    assert d.ctl_json("stats")["gateway_replies"] >= before + 2       # b's SYN-ACK and answer
    steered = [c for c in d.ctl_json("conntrack", "show", "--port", "pod-b")
               if c["in_port"] == "host-blue"]
    assert steered and steered[0]["destination"] == "2001:db8:18::12"


def kube_proxy_service(cluster_ip: str, backends: list[str]) -> str:
    """A Service as kube-proxy's nftables mode writes it: services chain
    from prerouting and output, a random choice of endpoint chains, each
    DNATing (and marking hairpin traffic for masquerade)."""
    endpoints = "".join(
        f"  chain endpoint-{i} {{\n    ip saddr {ip} jump mark-for-masquerade\n"
        f"    meta l4proto tcp dnat to {ip}:8080\n  }}\n" for i, ip in enumerate(backends))
    choice = ", ".join(f"{i} : goto endpoint-{i}" for i in range(len(backends)))
    return f"""table ip kube-test {{
  chain mark-for-masquerade {{
    meta mark set meta mark or 0x4000
  }}
  chain nat-prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }}
  chain nat-output {{
    type nat hook output priority -100; policy accept;
    jump services
  }}
  chain nat-postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    meta mark & 0x4000 == 0x4000 masquerade fully-random
  }}
  chain services {{
    ip daddr {cluster_ip} tcp dport 80 goto service-web
  }}
  chain service-web {{
    numgen random mod {len(backends)} vmap {{ {choice} }}
  }}
{endpoints}}}
"""


def test_pods_on_two_cluster_nodes_reach_the_world_services_and_each_other(cluster, netns,  # noqa: F811
                                                                            tmp_path):
    """Cluster mode: each node takes a gateway address from its own block
    for its host port; pods on two nodes reach the world (the hub, beside
    the nodes on their uplink) masqueraded to their node's address, each
    other and the nodes with their own; a ClusterIP with a backend on each
    node answers from both, to clients on both, with the client's own
    address seen by the backend; the gateway survives a SIGKILL; deleting
    the network takes host ports and rules away."""
    cluster.etcd()
    nodes = [cluster.node(i) for i in (1, 2)]
    for d in nodes:
        in_ns(d.ns, "ip", "route", "add", "default", "via", ETCD_IP)
        in_ns(d.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0")
    nodes[0].ctl("network", "create", "blue", "--vni", "100", "--subnet", "198.18.0.0/16")

    def gateway_of(d: Daemon) -> str | None:
        [net] = d.ctl_json("network", "list")
        return net["gateway_here"]
    gateways = [wait_for("a gateway", lambda d=d: gateway_of(d)) for d in nodes]
    blocks = {b["node"]: b["block"] for b in nodes[0].ctl_json("ipam", "blocks")}
    for d, gw in zip(nodes, gateways):
        assert ipaddress.IPv4Address(gw) in ipaddress.IPv4Network(blocks[d.name])
        assert f"inet {gw}/16" in in_ns(d.ns, "ip", "-4", "addr", "show", "vsh-blue").stdout
        assert 'masquerade comment "network blue"' in nft_table(d.ns)
    pods = {tag: cluster.pod(d, tag) for tag, d in (("a1", nodes[0]), ("b1", nodes[0]),
                                                      ("a2", nodes[1]), ("b2", nodes[1]))}
    ip = {tag: p["ip"].split("/")[0] for tag, p in pods.items()}
    servers = [serve_who(cluster.hub_ns, ETCD_IP)]
    try:
        servers += [serve_who(pods[t]["ns"], "0.0.0.0", 8080, t) for t in ("b1", "b2")]
        for tag, node in (("a1", 1), ("a2", 2)):
            assert who_am_i(pods[tag]["ns"], ETCD_IP) == f"{UNDERLAY}.{node}"     # masqueraded
            r = in_ns(pods[tag]["ns"], "ping", "-c", "2", "-i", "0.2", "-W", "2", ETCD_IP,
                      check=False)
            assert " 0% packet loss" in r.stdout
        assert who_am_i(pods["a1"]["ns"], ip["b2"]) == f"{ip['a1']} b2"      # its own address
        assert who_am_i(pods["a2"]["ns"], ip["b1"]) == f"{ip['a2']} b1"
        assert who_am_i(nodes[0].ns, ip["b2"]) == f"{gateways[0]} b2"        # a node, remote pod
        # A ClusterIP with a backend on each node, from clients on each node.
        rules = tmp_path / "kube.nft"
        rules.write_text(kube_proxy_service("198.19.255.20", [ip["b1"], ip["b2"]]))
        for d in nodes:
            in_ns(d.ns, "nft", "-f", str(rules))
        for client in ("a1", "a2"):
            answers = {who_am_i(pods[client]["ns"], "198.19.255.20", 80) for _ in range(16)}
            assert answers == {f"{ip[client]} b1", f"{ip[client]} b2"}, answers
        for d in nodes:                 # replies from the other node went back via the gateway
            assert d.ctl_json("stats")["gateway_replies"] > 0
            # Out by the port they came in, and still no ICMP redirect to the clients.
            assert in_ns(d.ns, "nstat", "-az", "IcmpOutRedirects").stdout.split()[-2] == "0"
        # The gateway is the node's for good: the same after a SIGKILL and restart.
        nodes[0].proc.kill()
        nodes[0].proc.wait()
        nodes[0] = cluster.node(1)
        assert gateway_of(nodes[0]) == gateways[0]
        assert who_am_i(pods["a1"]["ns"], ETCD_IP) == f"{UNDERLAY}.1"
        assert {who_am_i(pods["a1"]["ns"], "198.19.255.20", 80) for _ in range(16)} == \
            {f"{ip['a1']} b1", f"{ip['a1']} b2"}
    finally:
        for p in servers:
            p.kill()
            p.wait()
    for d in nodes:
        in_ns(d.ns, "nft", "delete", "table", "ip", "kube-test")
    nodes[1].ctl("network", "delete", "blue")
    for d in nodes:
        wait_for("host port and rules gone", lambda d=d: "vswitch" not in nft_table(d.ns) and in_ns(
            d.ns, "ip", "link", "show", "vsh-blue", check=False).returncode != 0)


def test_an_ipv6_cluster_ip_with_a_backend_on_another_node(cluster, tmp_path):  # noqa: F811
    """Cluster mode over IPv6: the backend's replies come back through the
    tunnel and are steered to the client's node's host port, for it to
    un-NAT."""
    cluster.ipv6 = True
    cluster.etcd()
    nodes = [cluster.node(i) for i in (1, 2)]
    for d in nodes:
        in_ns(d.ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    nodes[0].ctl("network", "create", "blue", "--vni", "100", "--subnet", "198.18.0.0/16",
                 "--subnet6", "2001:db8:18::/64")
    for d in nodes:
        wait_for("gateways", lambda d=d: d.ctl_json("network", "list")[0]["gateway6_here"])
    client, backend = cluster.pod(nodes[0], "a1"), cluster.pod(nodes[1], "b2")
    ip6 = {t: p["ip6"].split("/")[0] for t, p in (("a1", client), ("b2", backend))}
    wait_for("b2's endpoint", lambda: cluster.current.get(f"/vswitch/endpoints/blue/{ip6['b2']}"))
    server = serve_who(backend["ns"], "::", 8080)
    try:
        rules = tmp_path / "kube6.nft"
        rules.write_text(kube_proxy_service6("fd00:96::20", ip6["b2"]))
        in_ns(nodes[0].ns, "nft", "-f", str(rules))
        assert who_am_i(client["ns"], "fd00:96::20", 80) == ip6["a1"]
        assert nodes[0].ctl_json("stats")["gateway_replies"] >= 2
    finally:
        server.kill()
        server.wait()

"""Kubernetes NetworkPolicy, end to end, the way Kubernetes' own netpol e2e
suite checks it: namespaces x, y, z with dual-stack pods a, b, c each,
serving TCP and UDP on ports 80 and 81; each case applies policies
through vswitchctl and checks every pod pair and port, over IPv4 and
IPv6, with real connections against a truth table written out by hand
(not computed by vswitch's code)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import RUN_PREFIX, Daemon, in_ns, sh, write_toml

AGENT = str(Path(__file__).parent / "netpol_agent.py")
NAMESPACES, PODS = "xyz", "abc"
PORTS = [("tcp", 80), ("tcp", 81), ("udp", 80), ("udp", 81)]
GATEWAY, GATEWAY6 = "198.18.10.254", "2001:db8:10::fe"
TIMEOUT = 1.0           # a probe's wait: denied ones take this long, all at once
FAMILIES = (4, 6)


def address(pod: str, family: int = 4) -> str:
    """x/a -> 198.18.10.1 (2001:db8:10::1) ... z/c -> 198.18.10.9 (2001:db8:10::9)"""
    ns, name = pod.split("/")
    n = NAMESPACES.index(ns) * 3 + PODS.index(name) + 1
    return f"198.18.10.{n}" if family == 4 else f"2001:db8:10::{n}"


def service(pod: str, family: int = 4) -> str:
    """The ClusterIP in front of a pod: x/a -> 198.19.96.1 (2001:db8:96::1) ..."""
    n = address(pod, family).rsplit(".", 1)[-1].rsplit(":", 1)[-1]
    return f"198.19.96.{n}" if family == 4 else f"2001:db8:96::{n}"


SERVICE_CIDRS = ["198.19.96.0/24", "2001:db8:96::/64"]


def kube_proxy_rules() -> str:
    """A Service per pod, as kube-proxy writes them in the node: its ClusterIP
    DNATed to the pod, every port (IPv4 and IPv6)."""
    rules = {4: [], 6: []}
    for pod in ALL:
        for f, family in ((4, "ip"), (6, "ip6")):
            target = address(pod, f) if f == 4 else f"[{address(pod, f)}]"
            rules[f].append(f"    {family} daddr {service(pod, f)} dnat to {target}")
    return "".join(f"""table {family} kube-netpol {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
{chr(10).join(rules[f])}
  }}
}}
""" for f, family in ((4, "ip"), (6, "ip6")))


ALL = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]


class Matrix:
    """One node (its daemon in a namespace of its own, its host port there)
    and the nine pods, each running the agent's servers."""

    def __init__(self, tmp: Path):
        self.node = f"{RUN_PREFIX}-npnode"
        self.made = [self.node]
        sh("ip", "netns", "add", self.node)
        in_ns(self.node, "ip", "link", "set", "lo", "up")
        sock = str(tmp / "vswitchd.sock")
        # Services: kube-proxy's DNAT in the node, so the node forwards.
        in_ns(self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1",
              "net.ipv6.conf.all.forwarding=1")
        (tmp / "kube.nft").write_text(kube_proxy_rules())
        in_ns(self.node, "nft", "-f", str(tmp / "kube.nft"))
        self.via_services = False       # probes go to the pods' ClusterIPs instead
        config = {"node": {"name": "np-node", "socket": sock, "state_dir": str(tmp / "state"),
                           "service_cidrs": SERVICE_CIDRS},
                  "datapath": {"conntrack_max": 4096},
                  "network": [{"name": "blue", "vni": 100, "subnet": "198.18.0.0/16",
                               "block": "198.18.10.0/24", "gateway": GATEWAY,
                               "subnet6": "2001:db8:10::/64", "gateway6": GATEWAY6,
                               "host_port": "vswnp0",
                               "mtu": 1500}]}
        write_toml(tmp / "vswitchd.toml", config)
        self.daemon = Daemon(tmp / "vswitchd.toml", sock, tmp / "vswitchd.log", self.node)
        self.ns = {}
        self.servers = []
        for pod in ALL:
            kube_ns, name = pod.split("/")
            ns = f"{RUN_PREFIX}-np{kube_ns}{name}"
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
            self.ns[pod] = ns
            self.daemon.ctl("port", "add", f"{kube_ns}-{name}", "--netns", ns,
                            "--ip", f"{address(pod)}/16,{address(pod, 6)}/64",
                            "--namespace", kube_ns,
                            "--pod-name", name, "--label", f"pod={name}",
                            *[f"--named-port=serve-{p}-{proto}={proto.upper()}/{p}"
                              for proto, p in PORTS])
            server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, AGENT, "serve"],
                                      stdout=subprocess.PIPE, text=True)
            self.servers.append(server)
        for server in self.servers:
            assert server.stdout.readline().strip() == "ready"
        for kube_ns in NAMESPACES:
            self.daemon.ctl("namespace", "label", kube_ns, f"ns={kube_ns}")

    def close(self):
        for server in self.servers:
            server.kill()
            server.wait()
        self.daemon.stop()
        for ns in self.made:
            sh("ip", "netns", "del", ns, check=False)

    def apply(self, *manifests: dict):
        r = subprocess.run(
            [sys.executable, "-m", "vswitch.ctl", "--socket", self.daemon.socket, "policy",
             "apply", "-f", "-"], input=yaml.safe_dump_all(manifests), capture_output=True,
            text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def reset(self):
        for p in self.daemon.ctl_json("policy", "list"):
            self.daemon.ctl("policy", "delete", f"{p['namespace']}/{p['name']}")
        self.daemon.ctl("conntrack", "flush")

    def probe(self, targets: dict[str, list[tuple[str, str, int]]]) -> dict:
        """{source pod: [(destination ip, proto, port)]} -> {(src, ip, proto, port): ok},
        every source probing at once."""
        procs = {src: subprocess.Popen(
            ["ip", "netns", "exec", self.ns[src], sys.executable, AGENT, "probe",
             json.dumps(t), str(TIMEOUT)], stdout=subprocess.PIPE, text=True)
            for src, t in targets.items()}
        out = {}
        for src, proc in procs.items():
            results = json.loads(proc.communicate(timeout=60)[0])
            out.update({(src, *t): ok for t, ok in zip(targets[src], results)})
        return out

    def reachability(self, ports=PORTS, families=FAMILIES) -> dict:
        """Every pod to every other pod on every port, over each family:
        {(src, dst, proto, port, family): ok}."""
        target = service if self.via_services else address
        got = self.probe({src: [(target(dst, f), proto, port) for dst in ALL if dst != src
                                for proto, port in ports for f in families] for src in ALL})
        by_ip = {target(p, f): (p, f) for p in ALL for f in FAMILIES}
        return {(src, *by_ip[ip], proto, port): ok
                for (src, ip, proto, port), ok in got.items()}

    def check(self, expected, ports=PORTS, families=FAMILIES):
        """expected(src, dst, proto, port) -> bool, against real connections
        over each family; a failure prints the truth table's differences."""
        got = self.reachability(ports, families)
        wrong = sorted(f"{s} -> {d} {proto}/{port} IPv{f}: expected "
                       f"{'allowed' if not ok else 'denied'}, was {'allowed' if ok else 'denied'}"
                       for (s, d, f, proto, port), ok in got.items()
                       if ok != expected(s, d, proto, port))
        assert not wrong, f"{len(wrong)} of {len(got)} wrong:\n" + "\n".join(wrong)
        return got


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    m = Matrix(tmp_path_factory.mktemp("netpol"))
    try:
        yield m
    finally:
        m.close()


@pytest.fixture(params=["direct", "through-services"])
def world(matrix, request):
    """The matrix, its probes to the pods themselves, then again to a
    kube-proxy Service in front of each (the same truth table: DNAT first,
    then policy, on the backend's rules and the client's)."""
    matrix.reset()
    matrix.via_services = request.param == "through-services"
    yield matrix
    matrix.via_services = False
    matrix.reset()


@pytest.fixture
def plain(matrix):
    matrix.reset()
    yield matrix
    matrix.reset()


def policy(name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ns(pod):
    return pod.split("/")[0]


# ------------------------------------------------------------------ the cases

def test_no_policy_everything_is_reachable(world):
    world.check(lambda s, d, proto, port: True)


def test_default_deny_ingress_and_replies_still_pass(world):
    world.apply(policy("deny-ingress", "x", {"podSelector": {}}))
    # Nobody reaches x's pods, x's pods reach everyone (their replies pass
    # although new connections the other way are denied).
    world.check(lambda s, d, proto, port: ns(d) != "x")


def test_default_deny_egress(world):
    world.apply(policy("deny-egress", "x", {"podSelector": {}, "policyTypes": ["Egress"]}))
    world.check(lambda s, d, proto, port: ns(s) != "x")


def test_allow_all_adds_to_a_deny_all(world):
    world.apply(policy("deny-ingress", "x", {"podSelector": {}}),
                policy("allow-all", "x", {"podSelector": {}, "ingress": [{}]}))
    world.check(lambda s, d, proto, port: True)


def test_allow_from_the_same_namespace(world):
    world.apply(policy("same-ns", "x", {"podSelector": {},
                                        "ingress": [{"from": [{"podSelector": {}}]}]}))
    world.check(lambda s, d, proto, port: ns(d) != "x" or ns(s) == "x")


def test_allow_from_namespaces_by_label(world):
    world.apply(policy("from-y", "x", {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    world.check(lambda s, d, proto, port: ns(d) != "x" or ns(s) == "y")


def test_the_namespace_name_label_is_there_without_being_set(world):
    world.apply(policy("from-z", "x", {"podSelector": {}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}]}))
    world.check(lambda s, d, proto, port: ns(d) != "x" or ns(s) == "z")
    r = world.daemon.ctl("namespace", "label", "z", "kubernetes.io/metadata.name=x", check=False)
    assert r.returncode != 0 and "set for you" in r.stderr


def test_pod_and_namespace_selector_in_one_peer_mean_and(world):
    world.apply(policy("and", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                   "podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    world.check(lambda s, d, proto, port: d != "x/a" or s == "y/b")


def test_pod_and_namespace_selector_in_two_peers_mean_or(world):
    world.apply(policy("or", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                  {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    world.check(lambda s, d, proto, port: d != "x/a" or ns(s) == "y" or s == "x/b")


def test_match_expressions(world):
    world.apply(policy("exprs", "x", {"podSelector": {"matchExpressions": [
        {"key": "pod", "operator": "In", "values": ["a", "b"]}]}, "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [
                {"key": "ns", "operator": "NotIn", "values": ["x"]}]},
             "podSelector": {"matchExpressions": [
                 {"key": "pod", "operator": "Exists"},
                 {"key": "pod", "operator": "NotIn", "values": ["c"]},
                 {"key": "missing", "operator": "DoesNotExist"}]}}]}]}))
    world.check(lambda s, d, proto, port: d not in ("x/a", "x/b")
                or (ns(s) != "x" and s[-1] != "c"))


def test_ip_block_with_except(world):
    """An ipBlock is of one family: the other's addresses are not in it."""
    world.apply(policy("cidr", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "198.18.10.0/28",
                               "except": [f"{address('y/b')}/32", f"{address('z/c')}/32"]}}]}]}))
    world.check(lambda s, d, proto, port: d != "x/a" or s not in ("y/b", "z/c"), families=(4,))
    world.check(lambda s, d, proto, port: d != "x/a", families=(6,))


def test_ipv6_ip_block_with_except(world):
    world.apply(policy("cidr6", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "2001:db8:10::/124",
                               "except": [f"{address('y/a', 6)}/128",
                                          f"{address('z/b', 6)}/127"]}}]}]}))
    # z/b's /127 (::8/127) holds z/c's address (::9) too.
    world.check(lambda s, d, proto, port: d != "x/a" or s not in ("y/a", "z/b", "z/c"),
                families=(6,))
    world.check(lambda s, d, proto, port: d != "x/a", families=(4,))


def test_named_ports_ingress_and_egress(world):
    world.apply(policy("named-in", "x", {"podSelector": {"matchLabels": {"pod": "a"}},
                                         "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
                policy("named-out", "y", {"podSelector": {"matchLabels": {"pod": "a"}},
                                          "policyTypes": ["Egress"], "egress": [{"ports": [
                                              {"port": "serve-80-udp", "protocol": "UDP"}]}]}))
    world.check(lambda s, d, proto, port: (d != "x/a" or (proto, port) == ("tcp", 81))
                and (s != "y/a" or (proto, port) == ("udp", 80)))


def test_port_range_with_end_port(world):
    world.apply(policy("range", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"ports": [{"protocol": "UDP", "port": 80, "endPort": 81}]}]}))
    world.check(lambda s, d, proto, port: d != "x/a" or proto == "udp")


def test_egress_only_to_dns(world):
    world.apply(policy("dns-only", "x", {"podSelector": {}, "policyTypes": ["Egress"],
                                         "egress": [{"ports": [{"port": 53, "protocol": "UDP"},
                                                               {"port": 53, "protocol": "TCP"}]}]}))
    world.check(lambda s, d, proto, port: ns(s) != "x" or port == 53,
                ports=PORTS + [("udp", 53), ("tcp", 53)])


def test_egress_to_everything_but_the_pod_range_is_judged_after_dnat(world):
    """Calico's order: a ClusterIP outside the excepted range does not let
    x's pods reach pods through a Service."""
    world.apply(policy("no-pods", "x", {"podSelector": {}, "policyTypes": ["Egress"],
                                        "egress": [{"to": [
                                            {"ipBlock": {"cidr": "0.0.0.0/0",
                                                         "except": ["198.18.0.0/16"]}},
                                            {"ipBlock": {"cidr": "::/0",
                                                         "except": ["2001:db8:10::/64"]}}]}]}))
    world.check(lambda s, d, proto, port: ns(s) != "x")


def test_policies_add_up(world):
    world.apply(policy("b-on-80", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]}),
                policy("y-on-81", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                    {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                     "ports": [{"port": 81, "protocol": "UDP"}]}]}))
    world.check(lambda s, d, proto, port: d != "x/a" or (s == "x/b" and (proto, port) == (
        "tcp", 80)) or (ns(s) == "y" and (proto, port) == ("udp", 81)))


def test_labels_changed_at_run_time_move_pods_in_and_out(world):
    world.apply(policy("from-blue", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"team": "blue"}}}]}]}))
    world.daemon.ctl("port", "label", "z-c", "team=blue")
    try:
        world.check(lambda s, d, proto, port: d != "x/a" or s == "z/c")
        world.daemon.ctl("port", "label", "z-c", "team-")
        world.daemon.ctl("namespace", "label", "y", "team=blue")    # a namespace's, not a pod's
        world.check(lambda s, d, proto, port: d != "x/a")
    finally:
        world.daemon.ctl("port", "label", "z-c", "team-")
        world.daemon.ctl("namespace", "label", "y", "team-")


# ------------------------------------------------------- connections over time

class Conversation:
    """A TCP connection from one pod to another, kept open: say() sends a
    line and tells whether its echo came back within a second."""

    def __init__(self, matrix: Matrix, src: str, dst: str, port: int, family: int = 4):
        code = ("import socket,sys\n"
                f"s=socket.create_connection(('{address(dst, family)}',{port}),timeout=2)\n"
                "s.settimeout(1)\n"
                "for line in sys.stdin:\n"
                "    try:\n"
                "        s.sendall(line.encode()); print(s.recv(100) == line.encode(), flush=True)\n"
                "    except OSError:\n"
                "        print(False, flush=True)\n")
        self.proc = subprocess.Popen(["ip", "netns", "exec", matrix.ns[src], sys.executable,
                                      "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    def say(self, text="ping") -> bool:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip() == "True"

    def close(self):
        self.proc.kill()
        self.proc.wait()


def test_a_policy_change_cuts_open_connections_it_no_longer_allows(plain):
    """Open connections are checked again when policy changes: kept while
    allowed, cut at once when not (users expect a deny to mean deny)."""
    plain.apply(policy("allow-b", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}))
    kept = [Conversation(plain, "x/b", "x/a", 80, f) for f in FAMILIES]
    cut = [Conversation(plain, "x/b", "x/a", 81, f) for f in FAMILIES]
    try:
        assert all(c.say() for c in kept + cut)
        plain.apply(policy("allow-b", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"port": 80}]}]}))
        assert [c.say() for c in kept + cut] == [True, True, False, False]
        assert plain.daemon.ctl_json("stats")["conntrack"]["revoked"] >= 2
        plain.daemon.ctl("policy", "delete", "x/allow-b")
        assert all(c.say() for c in kept)
    finally:
        for c in kept + cut:
            c.close()


def test_node_reaches_isolated_pods_and_trace_conntrack_capture_explain(plain, tmp_path):
    plain.apply(policy("deny-all", "x", {"podSelector": {"matchLabels": {"pod": "a"}},
                                         "policyTypes": ["Ingress", "Egress"]}))
    # The node (kubelet's probes) still reaches the pod, and its replies go back.
    for family in FAMILIES:
        r = in_ns(plain.node, "ping", "-c", "2", "-i", "0.2", "-W", "1", address("x/a", family),
                  check=False)
        assert " 0% packet loss" in r.stdout, r.stdout
    conns = plain.daemon.ctl_json("conntrack", "show", "--port", "x-a")
    assert {(c["protocol"], c["source"], c["destination"], c["in_port"], c["out_port"])
            for c in conns if c["destination"] in (address("x/a"), address("x/a", 6))} == {
        ("icmp", GATEWAY, address("x/a"), "host-blue", "x-a"),
        ("icmpv6", GATEWAY6, address("x/a", 6), "host-blue", "x-a")}
    text = plain.daemon.ctl("conntrack", "show", "--port", "x-a").stdout
    assert f"[{address('x/a', 6)}]:0" in text and f"{address('x/a')}:0" in text, text
    capture = tmp_path / "drops.pcapng"
    cap = subprocess.Popen([sys.executable, "-m", "vswitch.ctl", "--socket", plain.daemon.socket,
                            "capture", "--point", "drop", "--filter", "tcp port 80", "-c", "1",
                            "-w", str(capture)], stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    got = plain.probe({"y/b": [(address("x/a"), "tcp", 80)]})
    assert list(got.values()) == [False]
    assert cap.wait(timeout=30) == 0, cap.stderr.read()
    text = sh("tshark", "-r", str(capture), "-T", "fields", "-e", "frame.comment").stdout
    assert "drop: policy_denied (ingress, x/deny-all)" in text, text
    port = plain.daemon.ctl_json("port", "show", "x-a")
    assert port["counters"]["policy_denied"] >= 1
    assert port["policies"] == {"ingress": ["x/deny-all"], "egress": ["x/deny-all"]}
    assert port["pod"]["labels"] == {"pod": "a"} and port["pod"]["namespace"] == "x"
    source = plain.daemon.ctl_json("port", "show", "y-b")["mac"]
    trace = plain.daemon.ctl_json(
        "trace", "--in-port", "y-b", "--scapy",
        f"Ether(src='{source}',dst='{port['mac']}')/IP(src='{address('y/b')}',dst='{address('x/a')}')"
        "/TCP(dport=80,flags='S')")
    assert trace["steps"][-2].get("policy") == "x/deny-all", trace
    assert trace["steps"][-2]["direction"] == "ingress"
    assert trace["steps"][-1] == {"step": "drop", "reason": "policy_denied"}
    trace = plain.daemon.ctl_json(
        "trace", "--in-port", "y-b", "--scapy",
        f"Ether(src='{source}',dst='{port['mac']}')/IPv6(src='{address('y/b', 6)}',"
        f"dst='{address('x/a', 6)}')/TCP(dport=80,flags='S')")
    assert trace["steps"][-2].get("policy") == "x/deny-all", trace
    assert trace["steps"][-1] == {"step": "drop", "reason": "policy_denied"}
    shown = plain.daemon.ctl_json("policy", "show", "x/deny-all")
    assert [p["pod"] for p in shown["pods"]] == ["x/a"] and shown["types"] == ["Ingress", "Egress"]
    text = plain.daemon.ctl("policy", "list").stdout
    assert "x/deny-all" in text and "Ingress,Egress" in text


def test_bad_manifests_get_errors_naming_the_field_and_change_nothing(plain, tmp_path):
    plain.apply(policy("keep", "x", {"podSelector": {}}))
    good = policy("new", "y", {"podSelector": {}})
    for bad, field in [
            ({"spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
                "cidr": "198.18.0.0/16", "except": ["10.0.0.0/8"]}}]}]}},
             "spec.ingress[0].from[0].ipBlock.except[0]"),
            ({"spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Maybe"}]}}},
             "spec.podSelector.matchExpressions[0].operator"),
            ({"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 81, "endPort": 80}]}]}},
             "spec.ingress[0].ports[0].endPort"),
            ({"spec": {"podSelector": {}, "egress": [{"to": [{}]}]}}, "spec.egress[0].to[0]"),
            ({"spec": {"podselector": {}}}, "spec.podselector"),
            ({"apiVersion": "v1"}, "apiVersion")]:
        doc = {**policy("broken", "z", {}), **bad}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump_all([good, doc]))
        r = plain.daemon.ctl("policy", "apply", "-f", str(path), check=False)
        assert r.returncode != 0 and field in r.stderr, (field, r.stderr)
        assert "document 2" in r.stderr
        assert [p["name"] for p in plain.daemon.ctl_json("policy", "list")] == ["keep"]
    path.write_text("kind: [unclosed")
    r = plain.daemon.ctl("policy", "apply", "-f", str(path), check=False)
    assert r.returncode != 0 and "not YAML or JSON" in r.stderr


def test_a_list_and_json_apply_and_survive_a_restart(plain, tmp_path):
    items = {"apiVersion": "v1", "kind": "List", "items": [
        policy("one", "x", {"podSelector": {"matchLabels": {"pod": "a"}}}),
        policy("two", "y", {"podSelector": {"matchLabels": {"pod": "a"}}})]}
    path = tmp_path / "list.json"
    path.write_text(json.dumps(items))
    out = plain.daemon.ctl("policy", "apply", "-f", str(path)).stdout
    assert out.split("\n")[:2] == ["networkpolicy x/one created", "networkpolicy y/two created"]
    again = plain.daemon.ctl("policy", "apply", "-f", str(path)).stdout
    assert "networkpolicy x/one unchanged" in again
    names = {(p["namespace"], p["name"]) for p in plain.daemon.ctl_json("policy", "list")}
    assert names == {("x", "one"), ("y", "two")}
    # SIGKILL and restart: policies, labels and ports come back from the state database.
    plain.daemon.proc.kill()
    plain.daemon.proc.wait()
    plain.daemon = Daemon(plain.daemon.config_path, plain.daemon.socket, plain.daemon.log_path,
                          plain.node)
    names = {(p["namespace"], p["name"]) for p in plain.daemon.ctl_json("policy", "list")}
    assert names == {("x", "one"), ("y", "two")}
    assert plain.daemon.ctl_json("port", "show", "x-a")["pod"]["labels"] == {"pod": "a"}
    plain.check(lambda s, d, proto, port: d not in ("x/a", "y/a"))


def flood(world, pod: str, target: str, count: int):
    """count UDP datagrams from one pod to target port 80, each from its own port."""
    in_ns(world.ns[pod], sys.executable, "-c",
          "import socket\n"
          f"for i in range({count}):\n"
          "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
          "    s.bind(('', 20000 + i))\n"
          f"    s.sendto(b'x', ('{target}', 80)); s.close()\n")


def via_gateway(world, pod: str, *targets: str):
    """A pod routes to other pods through its gateway (it controls its own stack)."""
    for target in targets:
        six = ":" in target
        in_ns(world.ns[pod], "ip", *(["-6"] if six else []), "route", "replace",
              f"{target}/{128 if six else 32}", "via", GATEWAY6 if six else GATEWAY)


def test_no_pod_monopolises_the_connection_table(plain):
    """The table holds 4096 connections (this node's config), at most an
    eighth of them charged to one pod: a pod with no policy flooding new
    connections, straight or through its gateway (where connections are
    tracked for Service replies), hits its share (conntrack_pod_full); the
    others' new connections still go through."""
    plain.apply(policy("open", "x", {"podSelector": {"matchLabels": {"pod": "a"}},
                                     "ingress": [{}]}))
    via_gateway(plain, "y/c", address("x/b"))
    before = plain.daemon.ctl_json("stats")
    flood(plain, "y/c", address("x/a"), 2000)
    flood(plain, "y/c", address("x/b"), 2000)        # routed by the node
    stats = plain.daemon.ctl_json("stats")
    share = stats["conntrack"]["max_per_pod"]
    assert share == 4096 // 8
    # (x/b's echoes of flows y/c had no share left for come back through
    # the node as new flows of x/b's: charged to x/b, within its own share.)
    assert stats["conntrack"]["entries"] <= 2 * share + 16
    assert stats["drops"]["conntrack_pod_full"] - before["drops"]["conntrack_pod_full"] > 0
    usage = stats["conntrack"]["per_pod"]
    assert usage["y-c"] == share, usage
    assert f"y-c={share}" in plain.daemon.ctl("stats").stdout
    assert f"at most {share} each" in plain.daemon.ctl("conntrack", "show", "--limit", "3").stdout
    assert {c["charged_to"] for c in plain.daemon.ctl_json("conntrack", "show")} <= {"y-c", "x-b"}
    assert usage.get("x-b", 0) <= share
    assert len(plain.daemon.ctl_json("conntrack", "show", "--limit", "5")) == 5
    # Others still open new connections to the isolated pod, both ways.
    assert plain.probe({"y/b": [(address("x/a"), "tcp", 80), (address("x/a", 6), "udp", 81)],
                        "z/a": [(address("x/a"), "udp", 80)]}) == {
        ("y/b", address("x/a"), "tcp", 80): True, ("y/b", address("x/a", 6), "udp", 81): True,
        ("z/a", address("x/a"), "udp", 80): True}
    plain.daemon.ctl("conntrack", "flush")
    assert plain.daemon.ctl_json("stats")["conntrack"]["entries"] <= 8


def test_a_pod_routing_through_its_gateway_meets_the_victims_ingress_rules(plain):
    """The attack: a pod denied by a victim's policy routes to the victim
    through its gateway (the node forwards it back out of the host port with
    the attacker's own address). It is judged as coming from that pod; the
    node's own address still gets in (kubelet's probes)."""
    plain.apply(policy("only-x", "x", {"podSelector": {"matchLabels": {"pod": "a"}},
                                       "ingress": [{"from": [{"podSelector": {}}]}]}))
    victim = [address("x/a"), address("x/a", 6)]
    via_gateway(plain, "y/b", *victim)
    via_gateway(plain, "x/b", *victim)
    before = plain.daemon.ctl_json("stats")["drops"]["policy_denied"]
    got = plain.probe({"y/b": [(ip, proto, 80) for ip in victim for proto in ("tcp", "udp")],
                       "x/b": [(ip, proto, 80) for ip in victim for proto in ("tcp", "udp")]})
    assert {k: v for k, v in got.items() if k[0] == "y/b"} == {
        ("y/b", ip, proto, 80): False for ip in victim for proto in ("tcp", "udp")}
    assert all(v for k, v in got.items() if k[0] == "x/b"), got      # the positive control
    assert plain.daemon.ctl_json("stats")["drops"]["policy_denied"] > before
    for ip in victim:
        r = in_ns(plain.node, "ping", "-c", "1", "-W", "1", ip, check=False)
        assert " 0% packet loss" in r.stdout, r.stdout


def test_cni_plugin_gives_the_pod_its_namespace_name_and_labels(plain, tmp_path):
    """The real plugin: K8S_POD_NAMESPACE/K8S_POD_NAME from CNI_ARGS, labels
    from args.cni.labels; the pod is selected by policies at once."""
    import shutil
    cni_bin = tmp_path / "cni"
    cni_bin.mkdir()
    (cni_bin / "vswitch").symlink_to(shutil.which("vswitch-cni"))
    pod_ns = f"{RUN_PREFIX}-npcni"
    sh("ip", "netns", "add", pod_ns)
    conf = {"cniVersion": "1.1.0", "name": "np", "type": "vswitch", "network": "blue",
            "socket": plain.daemon.socket,
            "args": {"cni": {"labels": [{"key": "app", "value": "web"}],
                             "namedPorts": {"http": 80}}}}
    env = {"PATH": os.environ["PATH"], "CNI_CONTAINERID": "np-ctr", "CNI_IFNAME": "eth0",
           "CNI_NETNS": f"/run/netns/{pod_ns}", "CNI_PATH": str(cni_bin),
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=z;K8S_POD_NAME=web-1"}
    try:
        plain.apply(policy("web", "z", {"podSelector": {"matchLabels": {"app": "web"}},
                                        "ingress": [{"ports": [{"port": "http"}]}]}))
        r = subprocess.run([str(cni_bin / "vswitch")], input=json.dumps(conf),
                           env={**env, "CNI_COMMAND": "ADD"}, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout
        ips = [str(ipaddress.ip_interface(a["address"]).ip) for a in json.loads(r.stdout)["ips"]]
        assert len(ips) == 2                        # one of each family
        ip = ips[0]
        [port] = [p for p in plain.daemon.ctl_json("port", "list") if p["container"]]
        assert port["pod"] == {"namespace": "z", "name": "web-1", "labels": {"app": "web"},
                               "named_ports": {"http": ["TCP", 80]}}
        assert port["policies"]["ingress"] == ["z/web"]
        shown = plain.daemon.ctl_json("policy", "show", "z/web")
        assert shown["pods"] == [{"pod": "z/web-1", "node": "(this node)", "addresses": ips}]
        # No server in it: a TCP 81 SYN is dropped by policy, an 80 one reaches it (RST back).
        before = plain.daemon.ctl_json("stats")["drops"]["policy_denied"]
        got = plain.probe({"x/b": [(ip, "tcp", 81)]})
        assert list(got.values()) == [False]
        assert plain.daemon.ctl_json("stats")["drops"]["policy_denied"] > before
        r = in_ns(plain.ns["x/b"], sys.executable, "-c",
                  f"import socket\ntry:\n socket.create_connection(('{ip}',80),timeout=2)\n"
                  "except ConnectionRefusedError:\n print('refused')", check=False)
        assert r.stdout.strip() == "refused"
        subprocess.run([str(cni_bin / "vswitch")], input=json.dumps(conf),
                       env={**env, "CNI_COMMAND": "DEL"}, capture_output=True, text=True,
                       check=True)
    finally:
        sh("ip", "netns", "del", pod_ns, check=False)


def test_fragmented_udp_to_a_port_restricted_rule_gets_through(plain):
    """A 4,000-byte datagram (three fragments at MTU 1500) to a port a rule
    allows: its later fragments take the first's verdict, and the echo
    (fragmented too) comes back; to a port the rule does not name, nothing."""
    plain.apply(policy("udp-80", "x", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
        {"ports": [{"protocol": "UDP", "port": 80}]}]}))
    before = plain.daemon.ctl_json("stats")["fragments_passed"]
    for family in FAMILIES:
        for port, ok in ((80, True), (81, False)):
            r = in_ns(plain.ns["y/b"], sys.executable, "-c",
                      "import socket\n"
                      f"s=socket.socket(socket.AF_INET{'6' if family == 6 else ''},"
                      "socket.SOCK_DGRAM)\ns.settimeout(1)\n"
                      f"s.sendto(b'f'*4000,('{address('x/a', family)}',{port}))\n"
                      "try:\n    print(len(s.recv(5000)))\nexcept OSError:\n    print(0)",
                      check=False)
            assert r.stdout.strip() == ("4000" if ok else "0"), (family, port, r.stdout)
    assert plain.daemon.ctl_json("stats")["fragments_passed"] - before >= 4


def test_an_icmp_error_from_a_third_pod_is_not_related(plain, tmp_path):
    """x/a isolates ingress and holds a connection to y/a; z/c (raw socket)
    sends x/a a port-unreachable quoting that connection, with a payload:
    dropped by policy, nothing reaches x/a. The same error from y/a, the
    connection's other end, is related and passes."""
    plain.apply(policy("deny-in", "x", {"podSelector": {"matchLabels": {"pod": "a"}}}))
    # x/a: a UDP flow to y/a, and a raw ICMP socket that reports the errors it gets.
    listener = subprocess.Popen(
        ["ip", "netns", "exec", plain.ns["x/a"], sys.executable, "-c",
         "import socket,sys\nr=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\n"
         "u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nu.bind(('',5555))\n"
         f"u.sendto(b'q',('{address('y/a')}',80))\nprint('ready',flush=True)\n"
         "while True:\n"
         "    data,(src,_)=r.recvfrom(2000)\n"
         "    if b'INJECTED' in data: print(src,flush=True)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        macs = {p: plain.daemon.ctl_json("port", "show", p)["mac"] for p in ("x-a", "y-a", "z-c")}

        def error(sender: str):
            pod = sender.replace("-", "/")
            in_ns(plain.ns[pod], sys.executable, "-c",
                  "from scapy.all import Ether, IP, ICMP, UDP, sendp\n"
                  f"sendp(Ether(src='{macs[sender]}', dst='{macs['x-a']}')/"
                  f"IP(src='{address(pod)}', dst='{address('x/a')}')/ICMP(type=3, code=3)/"
                  f"IP(src='{address('x/a')}', dst='{address('y/a')}')/UDP(sport=5555, dport=80)"
                  "/b'INJECTED', iface='eth0', verbose=False)")
        denied = plain.daemon.ctl_json("stats")["drops"]["policy_denied"]
        error("z-c")
        wait = time.monotonic() + 5
        while plain.daemon.ctl_json("stats")["drops"]["policy_denied"] == denied:
            assert time.monotonic() < wait, "z/c's error was not dropped"
            time.sleep(0.05)
        error("y-a")
        # What x/a received, in order: only y/a's error (z/c's came first).
        assert listener.stdout.readline().strip() == address("y/a")
    finally:
        listener.kill()
        listener.wait()

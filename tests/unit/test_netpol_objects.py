"""NetworkPolicy objects and their compilation, without a data plane:
defaults and validation as the API server has them, selector semantics,
and the tables a pod gets (peer ranges, ports, named ports)."""

import ipaddress

import pytest

from vswitch import netpol
from vswitch.errors import InvalidRequest
from vswitch.policy import Compiler, PolicyPod, cidr_ranges, disjoint
from vswitch.port import PodIdentity
from vswitch.protocol import address_key


def manifest(spec, name="p", namespace="x"):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ip(text):
    return address_key(text)


def test_policy_types_default_as_the_api_says():
    p = netpol.parse(manifest({"podSelector": {}}))
    assert p.types == ["Ingress"] and p.ingress == () and p.egress is None
    p = netpol.parse(manifest({"podSelector": {}, "egress": [{}]}))
    assert p.types == ["Ingress", "Egress"]
    p = netpol.parse(manifest({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}))
    assert p.ingress is None and p.egress == ()          # ingress rules without the type: unused
    p = netpol.parse({**manifest({}), "metadata": {"name": "n"}})
    assert p.namespace == "default" and p.pods.matches({"any": "thing"})


@pytest.mark.parametrize("selector, labels, selected", [
    ({}, {}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "web", "x": "y"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]},
     {"app": "b"}, True),
    ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}, {}, False),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]},
     {"app": "a"}, False),
    ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, {"app": ""}, True),
    ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {"app": "a"}, False),
    ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
     {"a": "1"}, False),
])
def test_selectors(selector, labels, selected):
    assert netpol.Selector.parse(selector, "s").matches(labels) is selected


@pytest.mark.parametrize("spec, field", [
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.18.0.0/16"},
                                                 "podSelector": {}}]}]},
     "spec.ingress[0].from[0]: ipBlock may not be combined"),
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "nope"}}]}]},
     "spec.ingress[0].from[0].ipBlock.cidr"),
    ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]},
     "spec.ingress[0].ports[0].protocol"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}, "spec.ingress[0].ports[0].port"),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
     "spec.ingress[0].ports[0].endPort"),
    ({"podSelector": {"matchLabels": {"bad key!": "x"}}}, "spec.podSelector.matchLabels"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "spec.podSelector.matchExpressions[0].values"),
    ({"podSelector": {}, "policyTypes": ["Both"]}, "spec.policyTypes[0]"),
    ({"podSelector": {}, "egress": [{"from": []}]}, "spec.egress[0].from"),
])
def test_bad_specs_name_the_field(spec, field):
    with pytest.raises(InvalidRequest) as e:
        netpol.parse(manifest(spec, name="broken"))
    assert field in str(e.value) and "NetworkPolicy broken in x" in str(e.value)


def test_bad_objects():
    for obj, text in [({**manifest({}), "kind": "Pod"}, "kind"),
                      ({**manifest({}), "metadata": {"name": "UPPER"}}, "metadata.name"),
                      ({**manifest({}), "metadata": {"name": "n", "namespace": "a_b"}},
                       "metadata.namespace"),
                      ("text", "must be an object")]:
        with pytest.raises(InvalidRequest, match=text):
            netpol.parse(obj)


def test_lists_are_unpacked():
    docs = netpol.documents([{"kind": "NetworkPolicyList", "items": [manifest({}, "a")]},
                             manifest({}, "b"), None])
    assert [d["metadata"]["name"] for d in docs] == ["a", "b"]


def test_ip_block_except_and_disjoint_ranges():
    block = netpol.IpBlock(ipaddress.ip_network("198.18.0.0/24"),
                           (ipaddress.ip_network("198.18.0.16/28"),
                            ipaddress.ip_network("198.18.0.255/32")))
    assert cidr_ranges(block) == [(ip("198.18.0.0"), ip("198.18.0.15")),
                                  (ip("198.18.0.32"), ip("198.18.0.254"))]
    six = netpol.IpBlock(ipaddress.ip_network("2001:db8::/32"),
                         (ipaddress.ip_network("2001:db8:1::/48"),))
    assert cidr_ranges(six) == [(ip("2001:db8::"), ip("2001:db8:0:ffff:ffff:ffff:ffff:ffff")),
                                (ip("2001:db8:2::"), ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"))]
    # ::/0 is every IPv6 address: IPv4's mapped part of the keys is left out.
    assert cidr_ranges(netpol.IpBlock(ipaddress.ip_network("::/0"), ())) == [
        (0, ip("::fffe:ffff:ffff")), (ip("::1:0:0:0"), (1 << 128) - 1)]
    assert cidr_ranges(netpol.IpBlock(ipaddress.ip_network("0.0.0.0/0"), ())) == [
        (ip("0.0.0.0"), ip("255.255.255.255"))]
    assert disjoint([(5, 9, 2), (1, 3, 1), (4, 4, 3), (20, 30, 4), (25, 26, 5)]) == \
        [(1, 9, 1), (20, 30, 4)]


def pods():
    def pod(ns, name, addr, labels, named=None):
        return PolicyPod(ns, name, labels, named or {}, (ip(addr),), "blue")
    return [pod("x", "a", "198.18.0.1", {"pod": "a"}, {"http": ("TCP", 8080)}),
            pod("x", "b", "198.18.0.2", {"pod": "b"}),
            pod("y", "a", "198.18.0.3", {"pod": "a"}, {"http": ("TCP", 9090)}),
            pod("y", "b", "198.18.0.4", {"pod": "b"}, {"http": ("UDP", 53)})]


def compile_for(policies, pod_index=0):
    parsed = [netpol.parse(p) for p in policies]
    ids = {p.key: i + 1 for i, p in enumerate(parsed)}
    everyone = pods()
    c = Compiler(parsed, ids, everyone, lambda n: {"kubernetes.io/metadata.name": n, "team": n})
    return (c.direction(everyone[pod_index], "ingress"),
            c.direction(everyone[pod_index], "egress"))


def test_tables_of_a_pod():
    ingress, egress = compile_for([
        manifest({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
             "ports": [{"port": 80}, {"port": 81, "endPort": 90, "protocol": "UDP"},
                       {"port": "http"}]},
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}]}]})])
    assert egress is None
    isolating, groups = ingress
    assert isolating == 1
    assert sorted(groups, key=str) == sorted([
        ([(ip("198.18.0.2"), ip("198.18.0.2"), 1)], [(6, 80, 80), (17, 81, 90)]),
        ([(ip("198.18.0.2"), ip("198.18.0.2"), 1)], [(6, 8080, 8080)]),    # x/a's own "http"
        ([(ip("198.18.0.3"), ip("198.18.0.4"), 1)], []),                   # y's pods, merged
    ], key=str)


def test_egress_named_ports_are_the_destination_pods():
    _, egress = compile_for([manifest({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}]})])
    _, groups = egress
    assert sorted(groups) == sorted([
        ([(ip("198.18.0.1"), ip("198.18.0.1"), 1)], [(6, 8080, 8080)]),
        ([(ip("198.18.0.3"), ip("198.18.0.3"), 1)], [(6, 9090, 9090)])])   # y/b's is UDP


def test_unselected_pods_are_open_and_deny_all_has_no_groups():
    ingress, egress = compile_for([manifest({"podSelector": {"matchLabels": {"pod": "b"}}})])
    assert ingress is None and egress is None
    ingress, _ = compile_for([manifest({"podSelector": {"matchLabels": {"pod": "b"}}})], 1)
    assert ingress == (1, [])


def test_pod_identity_validation():
    ident = PodIdentity.from_json({"namespace": "x", "labels": {"app": "web"},
                                   "named_ports": {"http": 80, "dns": "UDP/53", "s": ["SCTP", 9]}})
    assert ident.named_ports == {"http": ("TCP", 80), "dns": ("UDP", 53), "s": ("SCTP", 9)}
    for bad in [{"namespace": "X"}, {"labels": {"a": "b c"}}, {"named_ports": {"http": "ICMP/1"}},
                {"named_ports": {"HTTP": 80}}, {"named_ports": {"http": 70000}}, "x"]:
        with pytest.raises(InvalidRequest):
            PodIdentity.from_json(bad)
    assert netpol.parse_label_changes(["a=1", "b-", "c="]) == ({"a": "1", "c": ""}, ["b"])
    with pytest.raises(InvalidRequest):
        netpol.parse_label_changes(["novalue"])


def test_selectors_pick_peers_of_the_pods_own_network_only():
    parsed = [netpol.parse(manifest({"podSelector": {"matchLabels": {"pod": "a"}},
                                     "ingress": [{"from": [{"namespaceSelector": {}}]}]}))]
    blue = PolicyPod("x", "a", {"pod": "a"}, {}, (ip("198.18.0.1"),), "blue")
    red = PolicyPod("y", "r", {"pod": "r"}, {}, (ip("198.19.0.9"),), "red")
    c = Compiler(parsed, {"x/p": 1}, [blue, red], lambda n: {})
    assert c.direction(blue, "ingress") == (1, [([(ip("198.18.0.1"), ip("198.18.0.1"), 1)], [])])

"""Reconfiguration as a plan: the steps between two configs, and what a
reload refuses (the pure function; the system tests apply it)."""

from __future__ import annotations

import pytest

from vswitch.config import parse
from vswitch.errors import ReloadRefused
from vswitch.reconfig import plan

BLUE = {"name": "blue", "vni": 7, "subnet": "198.18.0.0/16", "block": "198.18.1.0/24",
        "mtu": 1450}
RED = {"name": "red", "vni": 8, "subnet": "198.19.0.0/16", "block": "198.19.1.0/24"}
GREEN = {"name": "green", "vni": 9, "subnet": "192.0.2.0/24", "block": "192.0.2.0/25"}


def config(*networks, overlay=None, **node):
    data = {"node": {"name": "n1", "state_dir": "/tmp/x", **node}, "network": list(networks)}
    if overlay is not None:
        data["node"]["mode"] = "overlay"
        data["overlay"] = {"vtep_ip": "192.0.2.10", **overlay}
    return parse(data)


def actions(old, new):
    return [(s.action, s.network.name if s.network else s.value) for s in plan(old, new)]


def test_nothing_changed_is_an_empty_plan():
    assert plan(config(BLUE, RED), config(BLUE, RED)) == []


def test_networks_go_first_then_come_in_config_order():
    old, new = config(BLUE, RED), config(GREEN, {**BLUE, "mtu": 1400})
    steps = plan(old, new)
    assert [(s.action, s.network.name) for s in steps] == [
        ("remove_network", "red"), ("add_network", "green"), ("set_mtu", "blue")]
    assert steps[1].index == 0
    assert [s.text for s in steps] == ["network red removed", "network green added",
                                       "network blue mtu 1450 -> 1400"]


def test_tunables_and_peers():
    old = config(BLUE, overlay={"peers": ["192.0.2.20", "192.0.2.21"]})
    new = config(BLUE, overlay={"peers": ["192.0.2.21", "192.0.2.22"], "underlay_mtu": 9000})
    got = actions(old, new)
    assert got[0][0] == "tunnel" and got[0][1].underlay_mtu == 9000
    assert [(a, str(v)) for a, v in got[1:]] == [("remove_peer", "192.0.2.20"),
                                                ("add_peer", "192.0.2.22")]


def test_fdb_and_poller_settings():
    old = config(BLUE)
    new = parse({"node": {"name": "n1", "state_dir": "/tmp/x"}, "network": [BLUE],
                 "fdb": {"aging_time": 60}, "datapath": {"busy_poll_us": 0}})
    assert actions(old, new) == [("aging_time", 60.0), ("busy_poll_us", 0.0)]


@pytest.mark.parametrize("new, says", [
    (config(BLUE, name="n2"), "node.name"),
    (config(BLUE, overlay={}), "node.mode"),
    (config({**BLUE, "vni": 70}), "network[0].vni"),
    (config({**BLUE, "subnet": "198.18.0.0/15", "block": "198.18.1.0/24"}), "network[0].subnet"),
])
def test_what_only_a_restart_can_change_is_refused(new, says):
    with pytest.raises(ReloadRefused, match=says.replace("[", r"\[").replace("]", r"\]")):
        plan(config(BLUE), new)


def test_the_vtep_cannot_move_on_reload():
    old = config(BLUE, overlay={})
    new = parse({"node": {"name": "n1", "state_dir": "/tmp/x", "mode": "overlay"},
                 "network": [BLUE], "overlay": {"vtep_ip": "192.0.2.11"}})
    with pytest.raises(ReloadRefused, match="vtep_ip"):
        plan(old, new)


def test_masquerade_follows_the_networks():
    """On by default with a host port; the rules change when a masquerading
    network comes or goes, or another subnet joins the exclusions."""
    from vswitch.masquerade import ruleset
    hosted = {**BLUE, "host_port": "vswb"}
    old, new = config(hosted), config(hosted, RED)
    assert [n.masquerade for n in new.networks] == [True, False]
    steps = plan(old, new)
    assert [(s.action, s.text) for s in steps][-1] == ("masquerade", "masquerade: blue")
    rules = ruleset(new.networks)
    assert ('ip saddr 198.18.0.0/16 ip daddr != { 198.18.0.0/16, 198.19.0.0/16 } masquerade '
            'comment "network blue"') in rules
    assert "198.19.0.0/16 ip daddr" not in rules                 # red does not masquerade
    off = config({**hosted, "masquerade": False})
    assert [s.text for s in plan(old, off)] == ["masquerade: none"]
    assert "chain" not in ruleset(off.networks) and "delete table ip vswitch" in ruleset([])
    assert plan(new, config(hosted, RED)) == []


def test_a_cluster_networks_gateway_comes_and_goes_in_place():
    """A cluster network (block_size set) gets its host port when the node
    takes its gateway, and loses it with its block: in place, with the
    masquerade rules after it. A static network's host port stays fixed."""
    import dataclasses
    import ipaddress

    from vswitch.cluster import network_from_record
    rec = {"vni": 7, "subnet": "198.18.0.0/16", "block_size": 26, "mtu": 1450}
    plain = network_from_record("blue", rec)
    gw = dataclasses.replace(plain, gateway=ipaddress.IPv4Address("198.18.0.65"),
                             host_port="vsh-blue", masquerade=True)
    old, new = (dataclasses.replace(config(BLUE), networks=(n,)) for n in (plain, gw))
    assert [(s.action, s.text) for s in plan(old, new)] == [
        ("host_port", "network blue host port: vsh-blue (198.18.0.65)"),
        ("masquerade", "masquerade: blue")]
    assert [(s.action, s.text) for s in plan(new, old)] == [
        ("host_port", "network blue host port: none"), ("masquerade", "masquerade: none")]
    with pytest.raises(ReloadRefused, match="host_port"):
        plan(config(BLUE), config({**BLUE, "host_port": "vswb"}))

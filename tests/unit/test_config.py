"""Config parsing: defaults, and every bad value named by its key."""

from __future__ import annotations

import ipaddress
import os

import pytest

from vswitch.config import DEFAULT_NETWORK, ConfigError, load, parse
from vswitch.encap import VXLAN
from vswitch.protocol import MAX_NETWORK_MTU

NET = {"name": "blue", "vni": 7, "subnet": "198.18.0.0/16", "block": "198.18.1.0/24"}
OVERLAY = {"node": {"mode": "overlay"}, "overlay": {"vtep_ip": "192.0.2.1"}}


def test_built_in_defaults_are_single_node_bridge_mode():
    c = load(None)
    assert c.mode == "bridge" and c.overlay is None
    assert [n.name for n in c.networks] == [DEFAULT_NETWORK["name"]]
    assert c.networks[0].subnet == ipaddress.IPv4Network("198.18.0.0/16")


@pytest.mark.parametrize("data, key", [
    ({"node": {"mode": "mesh"}}, "node.mode"),
    ({"node": {"socket": "relative.sock"}}, "node.socket"),
    ({"node": {"colour": "red"}}, "node.colour"),
    ({"fdb": {"aging_time": 0}}, "fdb.aging_time"),
    ({"datapath": {"batch": 5000}}, "datapath.batch"),
    ({"datapath": {"workers": 0}}, "datapath.workers"),
    ({"datapath": {"workers": 65}}, "datapath.workers"),
    ({"network": []}, "network"),
    ({"network": [{**NET, "mtu": MAX_NETWORK_MTU + 1}]}, "network[0].mtu"),
    ({"network": [{**NET, "host_port": "-bad"}]}, "network[0].host_port"),
    ({"network": [{**NET, "masquerade": True}]}, "network[0].masquerade"),
    ({"network": [{**NET, "host_port": "h0", "masquerade": "yes"}]}, "network[0].masquerade"),
    ({"datapath": {"conntrack_max": 0}}, "datapath.conntrack_max"),
    ({"datapath": {"conntrack_max_per_pod": -1}}, "datapath.conntrack_max_per_pod"),
    ({"node": {"service_cidrs": ["10.96.0.0/12", "not a cidr"]}}, "node.service_cidrs[1]"),
    ({"node": {"service_cidrs": "10.96.0.0/12"}}, "node.service_cidrs"),
    ({"node": {"service_cidrs": [f"10.{i}.0.0/16" for i in range(17)]}}, "node.service_cidrs"),
    ({"network": [{**NET, "host_port": "sixteen-chars-xx"}]}, "network[0].host_port"),
    ({"network": [{**NET, "block": "198.19.0.0/24"}]}, "network[0].block"),
    ({"network": [NET, {**NET, "name": "red"}]}, "network[1].vni"),
    ({"network": [NET, NET]}, "network[1].name"),
    ({"overlay": {"vtep_ip": "192.0.2.1"}}, "overlay"),
    ({**OVERLAY, "network": [{**NET, "mtu": 1500}]}, "network[0].mtu"),
    ({"node": {"mode": "overlay"}, "overlay": {"vtep_ip": "192.0.2.1", "peers": ["192.0.2.1"]}},
     "overlay.peers"),
    ({"metrics": {"listen": "nowhere"}}, "metrics.listen"),
    ({"network": [{**NET, "subnet6": "2001:db8::/130"}]}, "network[0].subnet6"),
    ({"network": [{**NET, "subnet6": "fe80::/64"}]}, "network[0].subnet6"),
    ({"network": [{**NET, "subnet6": "2001:db8::/64", "block6": "2001:db8:1::/64"}]},
     "network[0].block6"),
    ({"network": [{**NET, "subnet6": "2001:db8::/64", "block6": "2001:db8::/121"}]},
     "network[0].block6"),
    ({"network": [{**NET, "subnet6": "2001:db8::/64", "gateway6": "2001:db9::1"}]},
     "network[0].gateway6"),
    ({"network": [{**NET, "block6": "2001:db8::/64"}]}, "network[0].block6"),
    ({"network": [{"name": "six", "vni": 6}]}, "network[0].subnet"),
    ({"network": [{"name": "six", "vni": 6, "subnet6": "2001:db8::/64",
                   "block": "198.18.0.0/24"}]}, "network[0].block"),
])
def test_bad_values_name_their_key(data, key):
    with pytest.raises(ConfigError) as e:
        parse(data)
    assert e.value.key == key


def test_workers_default_to_the_cpus_the_daemon_may_use():
    assert parse({}).datapath_settings()["workers"] == len(os.sched_getaffinity(0))
    assert parse({"datapath": {"workers": 3}}).datapath_settings()["workers"] == 3


def test_the_vxlan_overhead_bounds_the_pod_mtu():
    ok = parse({**OVERLAY, "network": [{**NET, "mtu": 1500 - VXLAN.overhead(4)}]})
    assert ok.networks[0].mtu == 1450 and ok.overlay.underlay_mtu == 1500


def test_a_file_that_is_not_toml_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError) as e:
        load(str(bad))
    assert e.value.key == str(bad)


CLUSTER = {"node": {"name": "n1"}, "overlay": {"vtep_ip": "192.0.2.1"},
           "cluster": {"etcd": ["http://192.0.2.250:2379"]}}


def with_cluster(**keys):
    return {**CLUSTER, "cluster": {**CLUSTER["cluster"], **keys}}


def test_cluster_mode_needs_only_name_vtep_and_etcd():
    c = parse(CLUSTER)
    assert c.mode == "overlay" and c.networks == () and c.cluster.prefix == "/vswitch"
    assert c.cluster.lease_ttl == 15 and c.cluster.grace_period == 86400


@pytest.mark.parametrize("data, key", [
    ({**CLUSTER, "cluster": {}}, "cluster.etcd"),
    (with_cluster(etcd=[]), "cluster.etcd"),
    (with_cluster(etcd=["192.0.2.250:2379"]), "cluster.etcd"),
    (with_cluster(etcd=["ftp://192.0.2.250:2379"]), "cluster.etcd"),
    (with_cluster(etcd=["http://192.0.2.250:99999"]), "cluster.etcd"),
    (with_cluster(etcd=["http://192.0.2.250:2379/v3"]), "cluster.etcd"),
    (with_cluster(etcd=[7]), "cluster.etcd"),
    (with_cluster(prefix="vswitch"), "cluster.prefix"),
    (with_cluster(prefix="/a b"), "cluster.prefix"),
    (with_cluster(lease_ttl=1), "cluster.lease_ttl"),
    (with_cluster(grace_period=-1), "cluster.grace_period"),
    (with_cluster(max_blocks=0), "cluster.max_blocks"),
    (with_cluster(block_release_after=-5), "cluster.block_release_after"),
    (with_cluster(ca_file="/nonexistent/ca.pem"), "cluster.ca_file"),
    (with_cluster(cert_file="relative.pem"), "cluster.cert_file"),
    (with_cluster(cert_file="/etc/hostname"), "cluster.key_file"),
    (with_cluster(ca_file="/etc/hostname"), "cluster.etcd"),      # TLS needs https:// URLs
    (with_cluster(colour="red"), "cluster.colour"),
    ({**CLUSTER, "network": [NET]}, "network"),
    ({**CLUSTER, "node": {"name": "n1", "mode": "bridge"}}, "node.mode"),
    ({**CLUSTER, "cluster": "etcd"}, "cluster"),
    ({**CLUSTER, "node": {"name": "a/b"}}, "node.name"),
    ({**CLUSTER, "node": {"name": "-a"}}, "node.name"),
])
def test_bad_cluster_values_name_their_key(data, key):
    with pytest.raises(ConfigError) as e:
        parse(data)
    assert e.value.key == key


def test_vswitchd_exits_2_on_a_bad_cluster_config(tmp_path, capsys):
    from vswitch.daemon import main
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nname = "n1"\n[overlay]\nvtep_ip = "192.0.2.1"\n'
                   '[cluster]\netcd = ["http://192.0.2.250:2379"]\nlease_ttl = 0\n')
    assert main(["--config", str(bad)]) == 2
    assert "cluster.lease_ttl" in capsys.readouterr().err


def test_a_network_without_mtu_takes_its_underlays(monkeypatch):
    """Overlay: the underlay MTU (itself from the interface holding vtep_ip
    when not set) less the VXLAN overhead; bridge: the uplink's MTU (the
    interface of the default route); Ethernet's 1500 when there is none."""
    import vswitch.config as config
    monkeypatch.setattr(config, "interface_mtu",
                        lambda address: ("up0", 9000) if address else ("eth9", 1400))
    net = {k: v for k, v in NET.items() if k != "mtu"}
    ov = parse({**OVERLAY, "network": [net, {**net, "name": "red", "vni": 2, "mtu": 1300}]})
    assert ov.overlay.underlay_mtu == 9000 and ov.overlay.underlay_mtu_from == "interface up0"
    assert [(n.mtu, n.mtu_from) for n in ov.networks] == [
        (8950, "overlay.underlay_mtu 9000 (interface up0) less 50 of VXLAN"), (1300, "config")]
    bridge = parse({"network": [net]})
    assert (bridge.networks[0].mtu, bridge.networks[0].mtu_from) == (1400, "interface eth9")
    monkeypatch.setattr(config, "interface_mtu", lambda address: None)
    assert parse({"network": [net]}).networks[0].mtu == 1500
    assert parse({**OVERLAY, "network": [net]}).networks[0].mtu == 1450


def test_dual_stack_and_ipv6_only_networks():
    dual, six = parse({"network": [
        {**NET, "subnet6": "2001:db8:18::/64"},
        {"name": "six", "vni": 6, "subnet6": "2001:db8:60::/64", "block6": "2001:db8:60::/120",
         "gateway6": "2001:db8:60::fe"}]}).networks
    assert (str(dual.subnet), str(dual.block6), dual.gateway6) == \
        (NET["subnet"], "2001:db8:18::/64", None)
    assert six.subnet is None and six.block is None and str(six.gateway6) == "2001:db8:60::fe"

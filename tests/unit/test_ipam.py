"""IPAM on its SQLite state: allocation order, static requests, exhaustion,
release and durability across a reopen; failures carry the kind the CNI
plugin maps to its codes."""

from __future__ import annotations

import ipaddress

import pytest

from vswitch.config import parse
from vswitch.errors import Conflict, Exhausted, InvalidRequest
from vswitch.ipam import Ipam, gateway, gateway6
from vswitch.state import State

A = ipaddress.IPv4Address


@pytest.fixture
def net():
    return parse({"network": [{"name": "blue", "vni": 7, "subnet": "198.18.0.0/16",
                               "block": "198.18.1.0/29"}]}).networks[0]


@pytest.fixture
def state(tmp_path):
    s = State(str(tmp_path / "state"))
    yield s
    s.close()


def mac(n: int) -> str:
    return f"02:00:00:00:00:{n:02x}"


def test_addresses_come_in_order_skipping_reserved_ones(state, net):
    ipam = Ipam(state)
    got = [ipam.allocate(net, f"c{i}", "eth0", "/ns", "pods", mac(i)).ip for i in range(5)]
    assert gateway(net) not in got
    assert got == sorted(got) and len(set(got)) == 5
    assert all(ip in net.block and ip not in (net.block.network_address,
                                               net.block.broadcast_address) for ip in got)


def test_a_full_block_is_exhausted(state, net):
    ipam = Ipam(state)
    n = ipam.free_count(net)
    for i in range(n):
        ipam.allocate(net, f"c{i}", "eth0", "/ns", "pods", mac(i))
    with pytest.raises(Exhausted) as e:
        ipam.allocate(net, "one-more", "eth0", "/ns", "pods", mac(99))
    assert e.value.kind == "exhausted" and ipam.free_count(net) == 0


def test_static_requests_are_checked(state, net):
    ipam = Ipam(state)
    first = ipam.allocate(net, "c1", "eth0", "/ns", "pods", mac(1), ip=A("198.18.1.5"))
    assert first.ip == A("198.18.1.5")
    for ip in (A("198.18.1.5"), A("198.18.2.5"), gateway(net)):
        with pytest.raises(Conflict) as e:
            ipam.allocate(net, "c2", "eth0", "/ns", "pods", mac(2), ip=ip)
        assert e.value.kind == "unavailable"
    with pytest.raises(Conflict):
        ipam.allocate(net, "c3", "eth0", "/ns", "pods", mac(1))          # MAC taken
    with pytest.raises(InvalidRequest) as e:
        ipam.allocate(net, "c1", "eth0", "/ns", "pods", mac(4))          # twice
    assert e.value.kind == "invalid"


def test_release_frees_and_allocations_survive_a_reopen(tmp_path, net):
    s = State(str(tmp_path / "state"))
    ipam = Ipam(s)
    a = ipam.allocate(net, "c1", "eth0", "/ns", "pods", mac(1))
    b = ipam.allocate(net, "c2", "eth0", "/ns", "pods", mac(2))
    assert ipam.release("c1", "eth0") == a and ipam.get("c1", "eth0") is None
    s.close()
    s = State(str(tmp_path / "state"))
    try:
        assert Ipam(s).get("c2", "eth0") == b
        assert [x.container_id for x in Ipam(s).list("blue")] == ["c2"]
    finally:
        s.close()


def test_cluster_blocks_are_used_as_one_range_and_all_their_addresses_serve(state):
    from vswitch.cluster import network_from_record
    net = network_from_record("blue", {"vni": 7, "subnet": "198.18.0.0/16", "mtu": 1450,
                                       "block_size": 30})
    blocks = [ipaddress.IPv4Network("198.18.9.4/30"), ipaddress.IPv4Network("198.18.3.0/30")]
    ipam = Ipam(state)
    got = [ipam.allocate(net, f"c{i}", "eth0", "/ns", "pods", mac(i), blocks=blocks).ip
           for i in range(8)]
    # Every address of a claimed block is a pod's (block edges are not
    # special inside the subnet), in address order across the blocks.
    assert got == [A(f"198.18.3.{i}") for i in range(4)] + [A(f"198.18.9.{i}") for i in range(4, 8)]
    with pytest.raises(Exhausted) as e:
        ipam.allocate(net, "c9", "eth0", "/ns", "pods", mac(9), blocks=blocks)
    assert "198.18.3.0/30, 198.18.9.4/30" in str(e.value)
    with pytest.raises(Exhausted):
        ipam.allocate(net, "c9", "eth0", "/ns", "pods", mac(9), blocks=[])
    ipam.release("c2", "eth0")
    assert ipam.allocate(net, "c9", "eth0", "/ns", "pods", mac(9), blocks=blocks).ip == A("198.18.3.2")
    with pytest.raises(Conflict):                 # a static address outside the node's blocks
        ipam.allocate(net, "c10", "eth0", "/ns", "pods", mac(10), A("198.18.5.5"), blocks=blocks)
    assert ipam.count_in("blue", blocks[1]) == 4


@pytest.mark.parametrize("record", [
    None, [], {"vni": 7}, {"vni": 0, "subnet": "198.18.0.0/16", "mtu": 1450, "block_size": 26},
    {"vni": 7, "subnet": "nonsense", "mtu": 1450, "block_size": 26},
    {"vni": 7, "subnet": "198.18.0.0/16", "mtu": 1450, "block_size": 8},
    {"vni": 7, "subnet": "198.18.0.0/16", "mtu": "1450", "block_size": 26},
])
def test_malformed_network_records_are_refused(record):
    from vswitch.cluster import network_from_record
    with pytest.raises((ValueError, KeyError, TypeError)):
        network_from_record("blue", record)


def test_dual_stack_pods_get_one_address_per_family_kept_and_released_together(state):
    net = parse({"network": [{"name": "blue", "vni": 7, "subnet": "198.18.0.0/16",
                              "block": "198.18.1.0/29", "subnet6": "2001:db8:18::/64",
                              "block6": "2001:db8:18::/120"}]}).networks[0]
    ipam = Ipam(state)
    a = ipam.allocate(net, "c1", "eth0", "/ns", "pods", mac(1))
    b = ipam.allocate(net, "c2", "eth0", "/ns", "pods", mac(2),
                      ip6=ipaddress.IPv6Address("2001:db8:18::77"))
    assert (str(a.ip), str(a.ip6), str(b.ip6)) == ("198.18.1.2", "2001:db8:18::2", "2001:db8:18::77")
    assert gateway6(net) == ipaddress.IPv6Address("2001:db8:18::1")
    for bad in ("2001:db8:18::1", "2001:db8:18::77", "2001:db8:19::5"):   # gateway, taken, outside
        with pytest.raises(Conflict):
            ipam.allocate(net, "c3", "eth0", "/ns", "pods", mac(3), ip6=ipaddress.IPv6Address(bad))
    assert ipam.get("c3", "eth0") is None             # nothing half-made
    ipam.release("c1", "eth0")
    assert ipaddress.IPv6Address("2001:db8:18::2") not in ipam.used("blue", 6)
    assert a.ip not in ipam.used("blue")


def test_state_from_before_ipv6_keeps_its_allocations(tmp_path):
    """An allocations table without ip6 (and with ip NOT NULL) is rebuilt."""
    import sqlite3
    path = tmp_path / "state"
    path.mkdir()
    db = sqlite3.connect(path / "state.db")
    db.execute("CREATE TABLE allocations (container_id TEXT NOT NULL, ifname TEXT NOT NULL, "
               "network TEXT NOT NULL, ip TEXT NOT NULL, mac TEXT NOT NULL, netns TEXT NOT NULL, "
               "cni_network TEXT NOT NULL, created REAL NOT NULL, "
               "PRIMARY KEY (container_id, ifname), UNIQUE (network, ip))")
    db.execute("INSERT INTO allocations VALUES ('c1','eth0','blue','198.18.1.2','02:00:00:00:00:01',"
               "'/ns','pods',1.0)")
    db.commit()
    db.close()
    s = State(str(path))
    try:
        [alloc] = Ipam(s).list()
        assert (str(alloc.ip), alloc.ip6) == ("198.18.1.2", None)
        six = parse({"network": [{"name": "six", "vni": 6, "subnet6": "2001:db8::/64"}]}).networks[0]
        only6 = Ipam(s).allocate(six, "c2", "eth0", "/ns", "pods", mac(2))
        assert (only6.ip, str(only6.ip6)) == (None, "2001:db8::2")
    finally:
        s.close()

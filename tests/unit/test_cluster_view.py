"""The cluster's seams without etcd or root: the key schema, the view (its
tables, indices, listeners and what it refuses), the remote reconciler
against a recording data plane, the fence deadline and fencing itself."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from vswitch.cluster.fencing import Fencing
from vswitch.cluster.remote import Remote
from vswitch.cluster.schema import Change, Keys, network_from_record
from vswitch.cluster.session import Session
from vswitch.cluster.view import View
from vswitch.config import ClusterConfig
from vswitch.overlay import PeerTable
from vswitch.protocol import address_key

KEYS = Keys("/vswitch")
NET = {"vni": 100, "mtu": 1450, "subnet": "198.18.0.0/16", "block_size": 26}


def put(view: View, key: str, rec):
    view.apply(KEYS.change(KEYS.prefix + key, None if rec is None else json.dumps(rec).encode()))


def test_keys_name_the_records_a_node_follows_and_nothing_else():
    assert KEYS.change("/vswitch/endpoints/blue/198.18.0.5", b"{}") == \
        Change("endpoints", ("blue", "198.18.0.5"), b"{}")
    assert KEYS.change("/vswitch/nodes/n1", None) == Change("nodes", ("n1",), None)
    for foreign in ("/vswitch/vnis/100", "/vswitch/endpoints/blue", "/vswitch/nodes/a/b",
                    "/vswitch/other/x"):
        assert KEYS.change(foreign, b"{}") is None, foreign
    assert KEYS.block("blue", network_from_record("blue", NET).subnet) == \
        "/vswitch/blocks/blue/198.18.0.0-16"


def test_the_view_tells_listeners_before_and_after_and_keeps_its_indices():
    view, heard = View(KEYS), []
    view.listen("nodes", lambda name, before, rec: heard.append((name, before, rec)))
    put(view, "nodes/n2", {"vtep": "192.0.2.2"})
    put(view, "nodes/n2", {"vtep": "192.0.2.22"})
    put(view, "nodes/n2", None)
    assert heard == [(("n2",), None, {"vtep": "192.0.2.2"}),
                     (("n2",), {"vtep": "192.0.2.2"}, {"vtep": "192.0.2.22"}),
                     (("n2",), {"vtep": "192.0.2.22"}, None)]
    put(view, "endpoints/blue/198.18.0.5", {"mac": "02:00:00:00:00:05", "node": "n2"})
    put(view, "endpoints/blue/198.18.0.6", {"mac": "02:00:00:00:00:06", "node": "n2"})
    assert view.by_node["n2"] == {("blue", "198.18.0.5"), ("blue", "198.18.0.6")}
    assert view.mac_of[("blue", "02:00:00:00:00:05")] == ("blue", "198.18.0.5")
    put(view, "endpoints/blue/198.18.0.5", None)
    assert view.by_node["n2"] == {("blue", "198.18.0.6")}
    assert ("blue", "02:00:00:00:00:05") not in view.mac_of
    put(view, "blocks/blue/198.18.0.0-26", {"node": "n2"})
    assert view.holder("blue", "198.18.0.0-26") == "n2"
    assert set(view.known()) == {("endpoints", ("blue", "198.18.0.6")),
                                 ("blocks", ("blue", "198.18.0.0-26"))}


def test_the_view_refuses_what_a_writer_may_put_there_and_keeps_what_it_knew():
    view = View(KEYS)
    put(view, "nodes/n2", {"vtep": "192.0.2.2"})
    for bad in (b"not json", b"[1, 2]", b"[" * 100000):
        view.apply(Change("nodes", ("n2",), bad))
    for vtep in ("0.0.0.0", "224.0.0.1", "x", None):
        put(view, "nodes/n2", {"vtep": vtep})
    put(view, "networks/blue", {"vni": 0, "mtu": 1450, "subnet": "198.18.0.0/16",
                                "block_size": 26})
    assert view.ignored == 8
    assert view.nodes == {"n2": {"vtep": "192.0.2.2"}} and view.networks == {}
    # Another node's pod MAC cannot be claimed: its frames would go there.
    put(view, "endpoints/blue/198.18.0.5", {"mac": "02:00:00:00:00:05", "node": "n2"})
    put(view, "endpoints/blue/198.18.0.9", {"mac": "02:00:00:00:00:05", "node": "n3"})
    assert view.ignored == 9 and ("blue", "198.18.0.9") not in view.endpoints
    put(view, "endpoints/blue/198.18.0.9", {"mac": "02:00:00:00:00:05", "node": "n2"})
    assert view.endpoints[("blue", "198.18.0.9")]["node"] == "n2"      # its own: allowed


class RecordingDataPlane:
    def __init__(self):
        self.calls: list = []

    def has_network(self, name):
        return name == "blue"

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, *map(str, args)))


def fake_switch():
    net = network_from_record("blue", NET)
    dataplane = RecordingDataPlane()
    return SimpleNamespace(dataplane=dataplane, overlay=SimpleNamespace(
                               peer_table=PeerTable(dataplane)),  # type: ignore[arg-type]
                           config=SimpleNamespace(network=lambda n: net if n == "blue" else None),
                           policy=SimpleNamespace(schedule=lambda: None))


def test_remote_programs_only_what_the_holder_of_the_block_says():
    view, switch = View(KEYS), fake_switch()
    remote = Remote(view, switch, "n1", "192.0.2.1", arp_suppression=True)
    put(view, "networks/blue", NET)
    put(view, "blocks/blue/198.18.0.64-26", {"node": "n2"})
    put(view, "nodes/n2", {"vtep": "192.0.2.2"})
    assert ("add_peer", "192.0.2.2", "['blue']") in switch.dataplane.calls
    put(view, "endpoints/blue/198.18.0.70", {"mac": "02:00:00:00:00:70", "node": "n2"})
    put(view, "endpoints/blue/198.18.0.5", {"mac": "02:00:00:00:00:05", "node": "n2"})
    programmed = [c for c in switch.dataplane.calls if c[0] in ("fdb_add_remote", "neigh_set")]
    assert programmed == [("fdb_add_remote", "blue", "02:00:00:00:00:70", "192.0.2.2"),
                          ("neigh_set", "blue", "198.18.0.70", "02:00:00:00:00:70")]
    assert view.ignored == 1            # 198.18.0.5 is outside n2's blocks
    assert [p.addresses for p in remote.remote_pods()] == [
        (address_key(ipaddress.ip_address("198.18.0.70")),)]
    put(view, "nodes/n2", None)
    assert ("remove_peer", "192.0.2.2") in switch.dataplane.calls
    assert remote.remote_pods() == []   # a gone node's pods are no policy peers


def test_a_peer_goes_only_when_the_last_source_that_holds_it_lets_go():
    dataplane = RecordingDataPlane()
    table = PeerTable(dataplane)  # type: ignore[arg-type]
    a, b = ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("192.0.2.3")
    table.hold(a, "config")                     # every network
    table.hold(a, "node:n2", ["blue"])
    table.hold(b, "node:n3", ["blue"])
    table.release(a, "config")                  # a cluster node still needs it
    table.release(a, "api")                     # (never held by the API: nothing)
    assert ("remove_peer", "192.0.2.2") not in dataplane.calls
    table.network_added("red")                  # nobody holds a for every network now
    assert not any(c[0] == "add_peer" and "red" in c[2] for c in dataplane.calls)
    table.hold(b, "config")
    table.network_added("red")
    assert ("add_peer", "192.0.2.3", "['red']") in dataplane.calls
    table.release(a, "node:n2")
    assert dataplane.calls[-1] == ("remove_peer", "192.0.2.2") and a not in table.holds
    table.remove(b)                             # the operator's peer del: whoever held it
    assert dataplane.calls[-1] == ("remove_peer", "192.0.2.3") and table.holds == {}


def session(grace: float) -> Session:
    cfg = ClusterConfig(etcd=("http://192.0.2.250:2379",), grace_period=grace)
    return Session(cfg, "n1", "192.0.2.1", KEYS, db=None, started_at=0.0)  # type: ignore[arg-type]


def test_the_fence_deadline_is_grace_after_the_last_proof_less_a_margin():
    s = session(10.0)
    assert s.deadline() == 0.0                  # never proven: at once
    s.proof_before = 100.0                      # the previous run's proof
    assert s.deadline() == 109.0
    s.proven_until = 200.0                      # this run's own proof wins
    assert s.deadline() == 209.0
    assert session(86400.0 * 30).deadline() == 0.0
    long = session(86400.0)
    long.proven_until = 1000.0
    assert long.deadline() == 1000.0 + 86400.0 - 60.0       # the margin is at most 60 s


def test_fencing_takes_down_every_port_of_the_cluster_once_past_the_deadline():
    class Switch:
        loop = None

        def __init__(self):
            ports = [SimpleNamespace(name=n, state=st, is_host=False,
                                     network=SimpleNamespace(name="blue"))
                     for n, st in (("up", "up"), ("held", "fenced"), ("gone", "lost"))]
            self.ports = {p.name: p for p in ports}
            self.fenced: list = []

        async def fence(self, port, why):
            self.fenced.append(port.name)
            port.state = "fenced"

    async def run():
        s, sw, incidents, synced = session(4.0), Switch(), [], []
        sw.loop = asyncio.get_running_loop()
        s.save_proof = _nothing
        fencing = Fencing(s, sw, incidents.append)
        fencing.networks = lambda: ["blue"]

        async def sync():
            synced.append(fencing.fenced)
        fencing.sync_networks = sync
        s.proven_until = time.monotonic() + 60         # proven: nothing happens
        fencing.fenced = False
        fencing.check()
        assert fencing._task is None and not fencing.fenced
        s.proven_until = time.monotonic() - 10         # past the deadline
        fencing.check()
        assert fencing.fenced and s.cleared            # at once: no new address from now
        await fencing._task
        fencing.check()                                # once
        return sw.fenced, synced, incidents

    fenced, synced, incidents = asyncio.run(run())
    assert fenced == ["up", "held"] and synced == [True]
    assert len(incidents) == 1 and "1 pods and its gateways taken down" in incidents[0]


async def _nothing():
    return None


def pods_from_scratch(view: View, me: str) -> set:
    """Remote pods as they were once computed on every event: from every
    endpoint (the reference the incremental index must always equal)."""
    pods: dict = {}
    for (network, ip), ep in view.endpoints.items():
        node = ep.get("node")
        if node == me or node not in view.nodes or network != "blue":
            continue
        block = ipaddress.ip_network(f"{ip}/26", strict=False)
        if view.holder("blue", f"{block.network_address}-26") != node:
            continue
        pod = ep.get("pod") or {}
        who = (node, network, pod.get("namespace", "default"), pod.get("name") or ip)
        pods.setdefault(who, [json.dumps(pod.get("labels", {}), sort_keys=True), set()])[1].add(
            address_key(ipaddress.ip_address(ip)))
    return {(who, labels, frozenset(addresses)) for who, (labels, addresses) in pods.items()}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["endpoint", "node"]), st.integers(0, 2),
                          st.integers(0, 5), st.sampled_from([None, "a", "b"]),
                          st.booleans()), max_size=40))
def test_remote_pods_kept_one_event_at_a_time_equal_them_computed_from_scratch(events):
    view, switch = View(KEYS), fake_switch()
    remote = Remote(view, switch, "n0", "192.0.2.100", arp_suppression=False)
    put(view, "networks/blue", NET)
    for n in range(3):
        put(view, f"blocks/blue/198.18.{n}.0-26", {"node": f"n{n}"})
    for kind, n, k, label, alive in events:
        if kind == "node":
            put(view, f"nodes/n{n}", {"vtep": f"192.0.2.{n + 1}"} if alive else None)
        else:
            owner = n if k < 4 else (n + 1) % 3       # k 4, 5: outside its node's block
            rec = {"mac": f"02:00:00:00:{n:02x}:{k:02x}", "node": f"n{n}",
                   "pod": {"namespace": "shop", "name": f"pod{k % 2}",
                           "labels": {"app": label} if label else {}, "named_ports": {}}}
            put(view, f"endpoints/blue/198.18.{owner}.{k + 1}", rec if alive else None)
            for where, ep in list(view.endpoints.items()):      # a pod's records agree
                if alive and ep["node"] == rec["node"] and ep["pod"]["name"] == f"pod{k % 2}":
                    put(view, f"endpoints/{where[0]}/{where[1]}", {**ep, "pod": rec["pod"]})
        got = {((p.node, p.network, p.namespace, p.name),
                json.dumps(p.labels, sort_keys=True), frozenset(p.addresses))
               for p in remote.remote_pods()}
        assert got == pods_from_scratch(view, "n0")

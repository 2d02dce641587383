"""Cluster mode against a real etcd (Debian's etcd-server): nodes are
namespaces on one underlay (192.0.2.0/24, a bridge in a hub namespace that
also runs etcd on 192.0.2.250), each with its own vswitchd configured with
nothing but its name, its VTEP and the etcd endpoints."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from conftest import CTL, DAEMON, ETCD_IP, RUN, UNDERLAY, Capture, in_ns, write_toml
from helpers import ip_of, peers, ping, wait_for

from vswitch.client import ClientError

POD_SUBNET = "198.18.0.0/16"


def three_nodes(cluster, metrics=False, **keys):
    cluster.etcd()
    extra = {"metrics": {"listen": "127.0.0.1:9477"}} if metrics else None
    nodes = [cluster.node(i, cluster.config(i, extra, **keys)) for i in (1, 2, 3)]
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


def test_a_joining_node_is_a_peer_everywhere_within_a_second(cluster):
    nodes = three_nodes(cluster)
    d4 = cluster.node(4)          # answers once it registered (start-up waits for that)
    registered = time.monotonic()
    for d in nodes:
        wait_for("node 4 as a peer", lambda d=d: f"{UNDERLAY}.4" in peers(d), timeout=1.0)
    took = time.monotonic() - registered
    assert took < 1.0
    wait_for("node 4 joined blue", lambda: any(n["joined"] for n in d4.ctl_json("network", "list")))
    a, d = cluster.pod(nodes[0], "a"), cluster.pod(d4, "d")
    assert " 0% packet loss" in ping(d["ns"], ip_of(a)).stdout


def test_50_concurrent_adds_over_three_nodes_get_50_distinct_addresses(cluster):
    import ipaddress
    from concurrent.futures import ThreadPoolExecutor
    etcd = cluster.etcd()
    nodes = [cluster.node(i) for i in (1, 2, 3)]
    # Blocks of 16 addresses: every node has to claim several, all at once.
    nodes[0].ctl("network", "create", "blue", "--vni", "100", "--subnet", "198.18.0.0/24",
                 "--block-size", "28")
    for d in nodes:
        wait_for("blue", lambda d=d: any(n["joined"] for n in d.ctl_json("network", "list")))

    shared = [cluster.make_ns(f"s{i}") for i in range(3)]     # one pod namespace per node,
                                                            # an interface per attachment
    def add(i):
        return nodes[i % 3].client.attach(f"c{RUN}x{i:02d}", f"p{i}",
                                          f"/run/netns/{shared[i % 3]}", network="blue")

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(add, range(50)))
    addresses = [ip_of(r) for r in results]
    assert len(set(addresses)) == 50
    held: dict[str, list] = {}
    for b in nodes[1].ctl_json("ipam", "blocks"):
        held.setdefault(b["node"], []).append(ipaddress.IPv4Network(b["block"]))
    assert sorted(held) == ["node1", "node2", "node3"]
    for i, r in enumerate(results):     # each address from a block its node holds
        assert any(ipaddress.IPv4Address(ip_of(r)) in b for b in held[f"node{i % 3 + 1}"])
    keys = wait_for("50 endpoints", lambda: len(etcd.keys("/vswitch/endpoints/blue/")) == 50
                    and etcd.keys("/vswitch/endpoints/blue/"))
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == sorted(addresses)


def test_sigkill_and_restart_keep_addresses_lease_and_connectivity(cluster):
    nodes = three_nodes(cluster)
    a, b = cluster.pod(nodes[0], "a"), cluster.pod(nodes[1], "b")
    lease = nodes[1].ctl_json("cluster", "status")["lease"]
    blocks = nodes[1].ctl_json("cluster", "status")["blocks_held"]
    nodes[1].proc.kill()
    nodes[1].proc.wait()
    again = cluster.node(2, config=nodes[1].config_path)
    status = again.ctl_json("cluster", "status")
    assert status["lease"] == lease and status["blocks_held"] == blocks   # the same node
    ipam = again.ctl_json("ipam", "show")["allocations"]
    assert [(x["ip"], x["state"]) for x in ipam] == [(ip_of(b), "up")]
    assert " 0% packet loss" in ping(b["ns"], ip_of(a)).stdout
    c = cluster.pod(again, "c")
    assert ip_of(c) not in (ip_of(a), ip_of(b))
    assert " 0% packet loss" in ping(a["ns"], ip_of(c)).stdout


def test_a_dead_node_leaves_as_peer_and_its_blocks_return_after_the_grace_period(cluster):
    nodes = three_nodes(cluster, lease_ttl=2, grace_period=3)
    c = cluster.pod(nodes[2], "c")
    wait_for("c's MAC behind node 3", lambda: any(
        e["mac"] == c["mac"] for e in nodes[0].ctl_json("fdb", "show")))
    nodes[2].proc.kill()
    nodes[2].proc.wait()
    died = time.monotonic()
    for d in nodes[:2]:
        wait_for("node 3 gone as a peer", lambda d=d: f"{UNDERLAY}.3" not in peers(d), timeout=8)
    assert time.monotonic() - died >= 1.0       # not before its lease could expire
    assert not any(e["mac"] == c["mac"] for e in nodes[0].ctl_json("fdb", "show"))
    listing = {n["name"]: n for n in nodes[0].ctl_json("node", "list")}
    assert listing["node3"]["state"] == "gone" and listing["node3"]["blocks"]   # reserved still
    assert listing["node3"]["pods"] == 0
    wait_for("node 3's blocks reclaimed", lambda: not any(
        b["node"] == "node3" for b in nodes[0].ctl_json("ipam", "blocks")), timeout=15)
    assert "node3" not in {n["name"] for n in nodes[1].ctl_json("node", "list")}


def test_node_remove_frees_a_dead_nodes_blocks_at_once_and_refuses_a_live_one(cluster):
    nodes = three_nodes(cluster, lease_ttl=2)         # grace period: a day (the default)
    cluster.pod(nodes[2], "c")
    r = nodes[0].ctl("node", "remove", "node2", check=False)
    assert r.returncode == 1 and "alive" in r.stderr
    nodes[2].stop()
    wait_for("node 3 gone", lambda: {n["name"]: n["state"] for n in
                                     nodes[0].ctl_json("node", "list")}["node3"] == "gone",
             timeout=8)
    time.sleep(0.5)
    assert any(b["node"] == "node3" for b in nodes[0].ctl_json("ipam", "blocks"))
    out = nodes[0].ctl_json("node", "remove", "node3")
    assert out["blocks_released"] == 1
    wait_for("blocks gone everywhere", lambda: not any(
        b["node"] == "node3" for b in nodes[1].ctl_json("ipam", "blocks")))


def test_with_etcd_down_pods_talk_adds_work_while_the_lease_is_proven_then_converge(
        cluster, cni_runtime):
    nodes = three_nodes(cluster)            # lease_ttl 3: renewed every second
    etcd = cluster.current
    a, b = cluster.pod(nodes[0], "a"), cluster.pod(nodes[1], "b")
    etcd.stop()
    c = cluster.pod(nodes[0], "c")            # inside the proof of the lease: allowed
    assert " 0% packet loss" in ping(a["ns"], ip_of(b)).stdout
    assert " 0% packet loss" in ping(b["ns"], ip_of(c)).stdout   # flooding finds c
    wait_for("lease unproven", lambda: not nodes[0].ctl_json("cluster", "status")["can_allocate"])
    status = nodes[0].ctl_json("cluster", "status")
    assert not status["connected"] and status["error"]
    code, out = cni_runtime(nodes[0]).run("ADD", cluster.make_ns("e"), "ctr-e")
    assert code != 0 and out["code"] == 11 and "lease" in out["msg"]
    # A repeated ADD (the runtime's retry, in a new sandbox) brings no address up
    # again either: the address may be another node's by now.
    with pytest.raises(ClientError) as refused:
        nodes[0].client.attach(f"c{RUN}c", "eth0", f"/run/netns/{cluster.make_ns('c2')}")
    assert refused.value.kind == "busy" and "lease" in str(refused.value)
    assert " 0% packet loss" in ping(c["ns"], ip_of(a)).stdout
    # A restart while etcd is away: the node starts from what it last knew
    # (networks, peers) but fenced: its pod stays down until it has proven
    # its lease again, and then comes back by itself.
    nodes[1].proc.kill()
    nodes[1].proc.wait()
    nodes[1] = cluster.node(2, config=nodes[1].config_path)
    status = nodes[1].ctl_json("cluster", "status")
    assert not status["connected"] and status["fenced"] and not status["can_allocate"]
    assert [p["state"] for p in nodes[1].ctl_json("port", "list") if p["name"] == b["port"]] \
        == ["fenced"]
    assert ping(b["ns"], ip_of(a), count=1, check=False).returncode != 0
    etcd.start("m0")
    for d in nodes:
        wait_for("reconnected", lambda d=d: d.ctl_json("cluster", "status")["connected"],
                 timeout=20)
    wait_for("b back", lambda: [p["state"] for p in nodes[1].ctl_json("port", "list")
                                if p["name"] == b["port"]] == ["up"])
    assert not nodes[1].ctl_json("cluster", "status")["fenced"]
    assert " 0% packet loss" in ping(b["ns"], ip_of(a)).stdout
    # c was published once etcd came back: node 2 has it, ahead of traffic.
    wait_for("c's endpoint on node 2", lambda: nodes[1].ctl_json("cluster", "status")[
        "endpoints"] == 3)
    assert any(e["mac"] == c["mac"] and e["port"] == f"vxlan:{UNDERLAY}.1"
               for e in nodes[1].ctl_json("fdb", "show"))
    d = cluster.pod(nodes[0], "d")
    assert " 0% packet loss" in ping(b["ns"], ip_of(d)).stdout


def test_a_three_member_etcd_losing_one_member_keeps_working(cluster):
    cluster.etcd(members=3)
    nodes = [cluster.node(i) for i in (1, 2)]
    nodes[0].ctl("network", "create", "blue", "--vni", "100", "--subnet", POD_SUBNET)
    a = cluster.pod(nodes[0], "a")
    etcd = cluster.current
    etcd.stop("m0")                            # the first endpoint every node tried
    b = cluster.pod(nodes[1], "b")
    nodes[1].ctl("network", "create", "red", "--vni", "200", "--subnet", "198.19.0.0/16")
    for d in nodes:
        wait_for("red everywhere", lambda d=d: {n["name"] for n in d.ctl_json("network", "list")}
                 == {"blue", "red"}, timeout=15)
        wait_for("on another member", lambda d=d: d.ctl_json("cluster", "status")["endpoint"]
                 not in (None, etcd.urls["m0"]), timeout=15)
    assert " 0% packet loss" in ping(a["ns"], ip_of(b)).stdout
    d3 = cluster.node(3)
    wait_for("node 3 a peer", lambda: f"{UNDERLAY}.3" in peers(nodes[0]), timeout=5)
    assert d3.ctl_json("cluster", "status")["connected"]


def test_arp_for_a_remote_pod_is_answered_locally(cluster, tmp_path):
    nodes = three_nodes(cluster, metrics=True)
    a, b = cluster.pod(nodes[0], "a"), cluster.pod(nodes[1], "b")
    wait_for("b known on node 1", lambda: nodes[0].ctl_json("cluster", "status")["endpoints"] == 2)
    wire = Capture(nodes[0].ns, "udp port 4789", tmp_path / "wire.pcap", ifname="u0")
    in_ns(a["ns"], "ip", "neigh", "flush", "all")
    assert " 0% packet loss" in ping(a["ns"], ip_of(b)).stdout
    from scapy.layers.l2 import ARP
    from scapy.layers.vxlan import VXLAN  # before reading: it registers UDP port 4789
    frames = wire.stop()
    assert any(f.haslayer(VXLAN) and f.haslayer("ICMP") for f in frames)
    assert not any(f.haslayer(ARP) for f in frames)          # no ARP crossed the underlay
    assert nodes[0].ctl_json("stats")["arp_suppressed"] >= 1
    neigh = in_ns(a["ns"], "ip", "neigh", "show", ip_of(b)).stdout
    assert b["mac"] in neigh
    port = a["port"]
    trace = nodes[0].ctl_json("trace", "--in-port", port, "--scapy",
                              f"Ether(dst='ff:ff:ff:ff:ff:ff', src='{a['mac']}')/ARP(hwsrc="
                              f"'{a['mac']}', psrc='{ip_of(a)}', pdst='{ip_of(b)}')")
    assert trace["steps"][-1]["step"] == "arp_suppression"
    assert trace["steps"][-1]["mac"] == b["mac"]
    from prometheus_client.parser import text_string_to_metric_families
    scrape = in_ns(nodes[0].ns, "python3", "-c", "import urllib.request; print(urllib.request."
                   "urlopen('http://127.0.0.1:9477/metrics').read().decode())").stdout
    samples = {s.name: s.value for f in text_string_to_metric_families(scrape) for s in f.samples}
    assert samples["vswitch_arp_suppressed_total"] >= 1
    assert samples["vswitch_cluster_connected"] == 1 and samples["vswitch_cluster_nodes"] == 3
    assert samples["vswitch_cluster_endpoints"] == 2
    assert samples["vswitch_cluster_events_applied_total"] > 0


def test_a_second_daemon_with_a_live_nodes_name_is_refused(cluster, tmp_path):
    cluster.etcd()
    cluster.node(1)
    config = cluster.config(2)
    config.write_text(config.read_text().replace('name = "node2"', 'name = "node1"'))
    ns = cluster.node_ns(2)
    r = in_ns(ns, *DAEMON, "--config", str(config), check=False, timeout=30)
    assert r.returncode == 2
    assert "node name 'node1' is registered by a live vswitchd" in r.stderr


def test_the_vtep_is_found_from_the_default_route(cluster, tmp_path):
    cluster.etcd()
    ns = cluster.node_ns(5)
    in_ns(ns, "ip", "route", "add", "default", "via", ETCD_IP)
    config = cluster.config(5)
    config.write_text(config.read_text().replace('vtep_ip = "192.0.2.5"\n', ""))
    assert "vtep_ip" not in config.read_text()
    d = cluster.node(5, config=config)
    assert d.ctl_json("status")["vtep"] == f"{UNDERLAY}.5"
    assert cluster.current.get("/vswitch/nodes/node5")["vtep"] == f"{UNDERLAY}.5"


def test_a_node_that_finds_its_block_taken_detaches_those_pods(cluster):
    """Node 2 freezes (SIGSTOP) past its lease and grace period; its block is
    reclaimed and another node takes it; node 2 wakes up: the pods addressed
    from that block are taken down, released, and the incident is shown."""
    nodes = three_nodes(cluster, lease_ttl=2, grace_period=1)
    b = cluster.pod(nodes[1], "b")
    block = nodes[1].ctl_json("cluster", "status")["blocks_held"]["blue"][0]
    etcd = cluster.current
    os.kill(nodes[1].proc.pid, signal.SIGSTOP)
    try:
        key = f"/vswitch/blocks/blue/{block.replace('/', '-')}"
        wait_for("block reclaimed", lambda: etcd.get(key) is None, timeout=15)
        etcd.etcdctl("put", key, json.dumps({"node": "node9", "claimed": time.time()}))
    finally:
        os.kill(nodes[1].proc.pid, signal.SIGCONT)
    wait_for("incident", lambda: nodes[1].ctl_json("cluster", "status")["incidents"], timeout=15)
    status = wait_for("reconnected", lambda: (s := nodes[1].ctl_json("cluster", "status"))[
        "connected"] and s, timeout=15)
    assert block not in status["blocks_held"].get("blue", [])
    text = " ".join(i["what"] for i in status["incidents"])
    assert "fenced" in text or block in text
    port = wait_for("pod b detached, listed as lost", lambda: [
        p for p in nodes[1].ctl_json("port", "list") if p["name"] == b["port"]
        and p["state"] == "lost"])[0]
    assert block in port["error"]
    assert nodes[1].ctl_json("ipam", "show")["allocations"] == []
    assert in_ns(b["ns"], "ip", "link", "show", "eth0", check=False).returncode != 0
    assert status["counters"]["blocks_lost"] == 1


def make_certs(tmp: Path) -> dict:
    """A CA, etcd's server certificate for 192.0.2.250, a node's client
    certificate, and a client certificate from a CA etcd does not trust."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)
    for ca in ("ca", "rogue-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem")
    (tmp / "san.ext").write_text(f"subjectAltName=IP:{ETCD_IP}\n")
    for name, ca, ext in (("server", "ca", True), ("client", "ca", False),
                          ("rogue", "rogue-ca", False)):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "1", "-out", f"{name}.pem",
            *(["-extfile", "san.ext"] if ext else []))
    return {k: str(tmp / v) for k, v in (("ca", "ca.pem"), ("cert", "server.pem"),
                                         ("key", "server.key"))}


def test_tls_with_client_certificates_and_a_wrong_one_refused(cluster, tmp_path):
    certs = make_certs(tmp_path)
    cluster.etcd(tls=certs)
    good = {"ca_file": certs["ca"], "cert_file": str(tmp_path / "client.pem"),
            "key_file": str(tmp_path / "client.key")}
    d1 = cluster.node(1, **good)
    d1.ctl("network", "create", "blue", "--vni", "100", "--subnet", POD_SUBNET)
    assert d1.ctl_json("cluster", "status")["endpoint"].startswith("https://")
    bad = {**good, "cert_file": str(tmp_path / "rogue.pem"), "key_file": str(tmp_path / "rogue.key")}
    d2 = cluster.node(2, **bad)                 # starts (etcd away is not fatal) but cannot join
    status = d2.ctl_json("cluster", "status")
    assert not status["connected"] and not status["can_allocate"]
    assert "certificate" in status["error"].lower() or "handshake" in status["error"].lower(), \
        status["error"]
    assert "certificate signed by unknown authority" in (tmp_path / "etcd-m0.log").read_text()
    assert "node2" not in {n["name"] for n in d1.ctl_json("node", "list")}
    r = d2.ctl("network", "list", "--json")
    assert json.loads(r.stdout) == []


def test_blocks_grow_to_the_limit_then_exhaust_and_empty_ones_go_back(cluster):
    cluster.etcd()
    d = cluster.node(1, max_blocks=2, block_release_after=0.5)
    d.ctl("network", "create", "blue", "--vni", "100", "--subnet", "198.18.0.0/24",
          "--block-size", "28")
    shared = cluster.make_ns("s")
    attached = []
    for i in range(40):
        try:
            attached.append(d.client.attach(f"c{RUN}g{i:02d}", f"p{i}", f"/run/netns/{shared}",
                                            network="blue"))
        except ClientError as e:
            assert e.kind == "exhausted" and "cluster.max_blocks" in str(e), e
            break
    held = d.ctl_json("cluster", "status")["blocks_held"]["blue"]
    assert len(held) == 2 and 28 <= len(attached) <= 32    # two /28s, less the reserved ones
    for r in attached:
        d.client.detach(r["container_id"], r["ifname"])
    kept = wait_for("one block given back", lambda: len(
        d.ctl_json("cluster", "status")["blocks_held"].get("blue", [])) == 1 and
        d.ctl_json("cluster", "status")["blocks_held"]["blue"], timeout=10)
    time.sleep(1.5)                       # and never the last one
    assert d.ctl_json("cluster", "status")["blocks_held"]["blue"] == kept
    assert [b["block"] for b in d.ctl_json("ipam", "blocks")] == kept
    assert d.ctl_json("cluster", "status")["counters"]["blocks_released"] == 1


def test_records_written_into_etcd_cannot_divert_a_pods_address(cluster):
    """What a compromised node (or anyone with etcd access) writes is checked:
    an endpoint for an address outside the writer's blocks is ignored, and
    malformed records are skipped; the pods keep talking."""
    nodes = three_nodes(cluster)
    etcd = cluster.current
    a, c = cluster.pod(nodes[0], "a"), cluster.pod(nodes[2], "c")
    wait_for("a known on node 3", lambda: nodes[2].ctl_json("cluster", "status")["endpoints"] == 2)
    rogue = "02:66:66:66:66:66"
    etcd.etcdctl("put", f"/vswitch/endpoints/blue/{ip_of(a)}",
                 json.dumps({"mac": rogue, "node": "node2"}))
    for key, value in (("/vswitch/endpoints/blue/198.18.77.77", "not json"),
                       ("/vswitch/nodes/evil", json.dumps({"vtep": "not an address"})),
                       ("/vswitch/nodes/evil2", json.dumps({"vtep": "224.0.0.1"})),
                       ("/vswitch/networks/bad", json.dumps({"vni": "x"})),
                       ("/vswitch/endpoints/blue/nonsense", json.dumps({"mac": 5, "node": "node2"}))):
        etcd.etcdctl("put", key, value)
    wait_for("events applied", lambda: nodes[2].ctl_json("cluster", "status")["revision"] >=
             int(json.loads(etcd.etcdctl("get", "/vswitch/", "--prefix", "-w", "json").stdout)[
                 "header"]["revision"]))
    # Node 1 says again whose the address is, and everyone believes it.
    wait_for("a's record restored", lambda: (etcd.get(f"/vswitch/endpoints/blue/{ip_of(a)}")
                                             or {}).get("node") == "node1")
    wait_for("a behind node 1 again", lambda: {e["mac"]: e["port"] for e in nodes[2].ctl_json(
        "fdb", "show")}.get(a["mac"]) == f"vxlan:{UNDERLAY}.1")
    assert rogue not in {e["mac"] for e in nodes[2].ctl_json("fdb", "show")}
    in_ns(c["ns"], "ip", "neigh", "flush", "all")
    assert " 0% packet loss" in ping(c["ns"], ip_of(a)).stdout
    assert a["mac"] in in_ns(c["ns"], "ip", "neigh", "show", ip_of(a)).stdout
    assert {n["name"]: n["joined"] for n in nodes[2].ctl_json("network", "list")} == \
        {"blue": True}
    nodes[0].ctl("network", "create", "red", "--vni", "200", "--subnet", "198.19.0.0/16")
    wait_for("red joined despite the bad records", lambda: {
        n["name"]: n["joined"] for n in nodes[2].ctl_json("network", "list")}.get("red"))
    assert peers(nodes[2]) == {f"{UNDERLAY}.1", f"{UNDERLAY}.2"}
    counters = nodes[2].ctl_json("cluster", "status")["counters"]
    assert counters["reconnects"] == 1 and counters["records_ignored"] >= 5
    assert nodes[2].ctl_json("cluster", "status")["connected"]


def test_a_network_created_or_deleted_reaches_every_node(cluster):
    nodes = three_nodes(cluster)
    a, b = cluster.pod(nodes[0], "a"), cluster.pod(nodes[1], "b")
    nodes[2].ctl("network", "create", "red", "--vni", "200", "--subnet", "198.19.0.0/16",
                 "--mtu", "1400")
    for d in nodes:
        wait_for("red everywhere", lambda d=d: {n["name"]: n["joined"] for n in d.ctl_json(
            "network", "list")} == {"blue": True, "red": True})
    assert nodes[0].ctl_json("status")["networks"] == ["blue", "red"]
    r = cluster.pod(nodes[0], "r", network="red")
    assert r["mtu"] == 1400 and r["ip"].startswith("198.19.")
    for bad in (["network", "create", "red", "--vni", "201", "--subnet", "198.19.0.0/16"],
                ["network", "create", "green", "--vni", "100", "--subnet", "10.9.0.0/16"],
                ["network", "create", "green", "--vni", "300", "--subnet", "198.18.4.0/24"],
                ["network", "create", "Bad_Name", "--vni", "300", "--subnet", "10.9.0.0/16"],
                ["network", "create", "big", "--vni", "300", "--subnet", "10.9.0.0/16",
                 "--mtu", "1500"],
                ["network", "create", "odd", "--vni", "300", "--subnet", "10.9.0.0/16",
                 "--block-size", "8"],
                ["network", "delete", "green"]):
        res = nodes[0].ctl(*bad, check=False)
        assert res.returncode == 1 and res.stderr, bad
    nodes[1].ctl("network", "delete", "blue")
    for d in nodes:
        wait_for("blue gone everywhere", lambda d=d: [n["name"] for n in d.ctl_json(
            "network", "list")] == ["red"] and d.ctl_json("status")["networks"] == ["red"])
    # Its pods are detached and their addresses released; its blocks are gone.
    for d in nodes[:2]:
        assert all(x["network"] != "blue" for x in d.ctl_json("ipam", "show")["allocations"])
        assert all(p["network"] != "blue" for p in d.ctl_json("port", "list"))
    assert in_ns(a["ns"], "ip", "link", "show", "eth0", check=False).returncode != 0
    assert in_ns(b["ns"], "ip", "link", "show", "eth0", check=False).returncode != 0
    assert all(b["network"] == "red" for b in nodes[2].ctl_json("ipam", "blocks"))
    assert cluster.current.keys("/vswitch/endpoints/blue/") == []


def test_a_watch_that_falls_behind_compaction_lists_everything_again(cluster):
    nodes = three_nodes(cluster, lease_ttl=60)
    etcd = cluster.current
    relists = nodes[2].ctl_json("cluster", "status")["counters"]["relists"]
    os.kill(nodes[2].proc.pid, signal.SIGSTOP)
    try:
        # Enough changes that etcd cannot hold them for the stalled watcher,
        # a network among them, then compaction of everything it missed.
        # One response per change: etcd buffers about a thousand for a watcher.
        writer = ("import asyncio\nfrom vswitch.etcd import Etcd\n"
                  "async def main():\n"
                  f"    e = Etcd(['{etcd.urls['m0']}']); await e.connect()\n"
                  "    for i in range(50):\n"
                  "        await asyncio.gather(*(e.put(f'/vswitch/filler/{i}-{k}', b'x' * 4096)"
                  " for k in range(100)))\n"
                  "asyncio.run(main())\n")
        in_ns(cluster.hub_ns, "python3", "-c", writer, timeout=60)
        nodes[0].ctl("network", "create", "red", "--vni", "200", "--subnet", "198.19.0.0/16")
        revision = json.loads(etcd.etcdctl("get", "/vswitch/", "--prefix", "--limit", "1", "-w",
                                           "json").stdout)["header"]["revision"]
        etcd.etcdctl("compact", str(revision))
    finally:
        os.kill(nodes[2].proc.pid, signal.SIGCONT)
    wait_for("red on node 3", lambda: "red" in {n["name"] for n in nodes[2].ctl_json(
        "network", "list")}, timeout=20)
    status = nodes[2].ctl_json("cluster", "status")
    assert status["counters"]["relists"] > relists
    assert "compacted" in nodes[2].log_path.read_text()
    assert status["counters"]["records_ignored"] == 0       # other keys are not ours to judge


def test_a_node_cut_off_from_etcd_leaves_and_comes_back_as_itself(cluster):
    """Node 3 loses etcd (a blackhole route), not its peers: its lease
    expires, the others drop it as a peer, it stops handing out addresses;
    once etcd is back it registers again on a new lease, publishes its pods
    and keeps its blocks and addresses."""
    nodes = three_nodes(cluster, lease_ttl=2)
    a, c = cluster.pod(nodes[0], "a"), cluster.pod(nodes[2], "c")
    held = nodes[2].ctl_json("cluster", "status")["blocks_held"]
    lease = nodes[2].ctl_json("cluster", "status")["lease"]
    in_ns(nodes[2].ns, "ip", "route", "add", "blackhole", f"{ETCD_IP}/32")
    wait_for("node 3 gone from node 1", lambda: f"{UNDERLAY}.3" not in peers(nodes[0]), timeout=10)
    wait_for("lease unproven", lambda: not nodes[2].ctl_json("cluster", "status")["can_allocate"])
    with pytest.raises(ClientError) as e:
        cluster.pod(nodes[2], "x")
    assert e.value.status == 503 and "lease" in str(e.value)
    in_ns(nodes[2].ns, "ip", "route", "del", "blackhole", f"{ETCD_IP}/32")
    status = wait_for("node 3 back", lambda: (s := nodes[2].ctl_json("cluster", "status"))[
        "connected"] and s, timeout=20)
    assert status["lease"] != lease and status["blocks_held"] == held
    wait_for("node 3 a peer again", lambda: f"{UNDERLAY}.3" in peers(nodes[0]), timeout=5)
    wait_for("c published again", lambda: nodes[0].ctl_json("cluster", "status")["endpoints"] == 2)
    assert " 0% packet loss" in ping(a["ns"], ip_of(c)).stdout
    assert [x["ip"] for x in nodes[2].ctl_json("ipam", "show")["allocations"]] == [ip_of(c)]


def test_policies_and_labels_reach_every_node_and_match_remote_pods(cluster):
    """A policy applied on one node is enforced on every node within a
    second; pods on other nodes are matched by the identity their endpoint
    records carry, and a label changed on one node moves its pod in or out
    of other nodes' rules."""
    nodes = three_nodes(cluster)
    db = cluster.pod(nodes[0], "a", pod={"namespace": "x", "name": "db", "labels": {"app": "db"}})
    web = cluster.pod(nodes[1], "b", pod={"namespace": "x", "name": "web"})
    other = cluster.pod(nodes[2], "c", pod={"namespace": "y", "name": "web",
                                            "labels": {"role": "client"}})
    wait_for("endpoints everywhere", lambda: all(
        d.ctl_json("cluster", "status")["endpoints"] == 3 for d in nodes))
    manifest = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "db", "namespace": "x"},
                "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}}
    r = subprocess.run([*CTL, "--socket", nodes[2].socket, "policy", "apply", "-f", "-"],
                       input=json.dumps(manifest), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    applied = time.monotonic()
    wait_for("policy on node 1", lambda: [p["name"] for p in nodes[0].ctl_json("policy", "list")]
             == ["db"], timeout=1.0)
    assert time.monotonic() - applied < 1.0
    assert json.loads(cluster.current.etcdctl("get", "/vswitch/policies/x/db",
                                              "--print-value-only").stdout)["spec"] == manifest["spec"]
    # x/web has no role: denied; y/web has role=client but is in another namespace: denied.
    assert " 100% packet loss" in ping(web["ns"], ip_of(db), count=1, check=False).stdout
    assert " 100% packet loss" in ping(other["ns"], ip_of(db), count=1, check=False).stdout
    assert nodes[0].ctl_json("stats")["drops"]["policy_denied"] >= 2
    # Label x/web on its own node (node 2): node 1 lets it in.
    [web_port] = [p for p in nodes[1].ctl_json("port", "list") if p["container"]]
    nodes[1].ctl("port", "label", web_port["name"], "role=client")
    wait_for("x/web selected on node 1", lambda: [
        p["pod"] for p in nodes[0].ctl_json("policy", "show", "x/db")["pods"]] == ["x/db"] and
        ping(web["ns"], ip_of(db), count=1, check=False).returncode == 0, timeout=5)
    assert " 100% packet loss" in ping(other["ns"], ip_of(db), count=1, check=False).stdout
    # Deleted on node 1: gone everywhere, everyone reaches db again.
    nodes[0].ctl("policy", "delete", "x/db")
    wait_for("policy gone on node 3", lambda: nodes[2].ctl_json("policy", "list") == [],
             timeout=1.0)
    assert " 0% packet loss" in ping(other["ns"], ip_of(db)).stdout


def test_records_of_any_shape_under_every_prefix_never_stop_a_node_following(cluster):
    """Random records of every kind written straight into etcd (any JSON
    shape, nesting 100,000 deep, a live block's record made a list): each
    is skipped and counted, the watch goes on, and a change made after
    them still reaches every node."""
    nodes = three_nodes(cluster)
    etcd = cluster.current
    a, b = cluster.pod(nodes[0], "a"), cluster.pod(nodes[1], "b")
    [block] = [k for k in etcd.etcdctl("get", "/vswitch/blocks/", "--prefix", "--keys-only")
               .stdout.split() if etcd.get(k).get("node") == "node1"]
    # Node 2 publishes, in its own block, an endpoint carrying node 1's pod
    # MAC: refused, and every node still sends that MAC to node 1.
    wait_for("a known on node 3", lambda: nodes[2].ctl_json("cluster", "status")["endpoints"] == 2)
    ignored = nodes[2].ctl_json("cluster", "status")["counters"]["records_ignored"]
    stolen = ip_of(b).rsplit(".", 1)[0] + "." + str(int(ip_of(b).rsplit(".", 1)[1]) + 1)
    etcd.etcdctl("put", f"/vswitch/endpoints/blue/{stolen}",
                 json.dumps({"mac": a["mac"], "node": "node2"}))
    wait_for("the record refused", lambda: nodes[2].ctl_json(
        "cluster", "status")["counters"]["records_ignored"] == ignored + 1)
    assert {e["mac"]: e["port"] for e in nodes[2].ctl_json("fdb", "show")}.get(a["mac"]) == \
        f"vxlan:{UNDERLAY}.1"
    in_ns(b["ns"], "ip", "neigh", "flush", "all")
    assert " 0% packet loss" in ping(b["ns"], ip_of(a)).stdout
    before = [d.ctl_json("cluster", "status")["counters"]["records_ignored"] for d in nodes]
    writer = str(Path(__file__).parent / "etcd_fuzz_writer.py")
    r = in_ns(cluster.hub_ns, sys.executable, writer, etcd.urls["m0"], "23", "400", block,
              timeout=300, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    written = int(r.stdout)

    def revision():
        return int(json.loads(etcd.etcdctl("get", "/vswitch/", "--prefix", "-w", "json",
                                           "--limit", "1").stdout)["header"]["revision"])
    top = revision()
    for d in nodes:
        wait_for("every record seen", lambda d=d: d.ctl_json("cluster", "status")["revision"]
                 >= top, timeout=60)
    for d, was in zip(nodes, before):
        status = d.ctl_json("cluster", "status")
        assert status["connected"], status
        assert status["counters"]["reconnects"] == 1
        ignored = status["counters"]["records_ignored"] - was
        assert 100 <= ignored <= written, (ignored, written)
    # The node still follows: a new network reaches every node, pods still talk.
    nodes[2].ctl("network", "create", "red", "--vni", "200", "--subnet", "198.19.0.0/16")
    for d in nodes:
        wait_for("red everywhere", lambda d=d: {n["name"]: n["joined"] for n in d.ctl_json(
            "network", "list")}.get("red"), timeout=20)
    assert " 0% packet loss" in ping(b["ns"], ip_of(a)).stdout
    assert nodes[1].ctl_json("cluster", "status")["counters"]["relists"] == 1


def test_a_reload_keeps_a_static_peer_that_is_a_live_nodes_vtep(cluster):
    """Node 1 names node 2's VTEP as a static peer too; a reload dropping
    it from the file leaves node 2 a peer (it is a live node)."""
    cluster.etcd()
    path = cluster.config(1)
    config = tomllib.loads(path.read_text())
    config["overlay"]["peers"] = [f"{UNDERLAY}.2"]
    write_toml(path, config)
    nodes = [cluster.node(1, path), cluster.node(2)]
    nodes[0].ctl("network", "create", "blue", "--vni", "100", "--subnet", POD_SUBNET)
    for d in nodes:
        wait_for("network everywhere", lambda d=d: any(
            n["joined"] for n in d.ctl_json("network", "list")))
    wait_for("node 2 a peer", lambda: peers(nodes[0]) == {f"{UNDERLAY}.2"})
    del config["overlay"]["peers"]
    write_toml(path, config)
    nodes[0].proc.send_signal(signal.SIGHUP)
    wait_for("reloaded", lambda: "peer 192.0.2.2 removed" in Path(nodes[0].log_path).read_text())
    assert peers(nodes[0]) == {f"{UNDERLAY}.2"}
    a, b = cluster.pod(nodes[0], "a"), cluster.pod(nodes[1], "b")
    assert " 0% packet loss" in ping(a["ns"], ip_of(b)).stdout


def test_a_node_restarted_while_cut_off_still_fences_after_its_grace_period(cluster):
    """Restarted (SIGKILL) while etcd is away, a node has no proof of its
    lease: it counts as unproven from its start, and fences itself after
    the grace period as if it had not restarted."""
    nodes = three_nodes(cluster, lease_ttl=2, grace_period=2)
    a = cluster.pod(nodes[0], "a")
    cluster.current.stop()
    nodes[0].proc.kill()
    nodes[0].proc.wait()
    nodes[0] = cluster.node(1, config=nodes[0].config_path)
    status = nodes[0].ctl_json("cluster", "status")
    assert status["fenced"] and not status["can_allocate"]       # from its start
    assert [p["state"] for p in nodes[0].ctl_json("port", "list") if p["name"] == a["port"]] == \
        ["fenced"]
    wait_for("the interface it left cleared", lambda: in_ns(
        a["ns"], "ip", "link", "show", "eth0", check=False).returncode != 0, timeout=15)
    # A port made by hand with one of its addresses needs the proof as well.
    spare = str(ipaddress.ip_address(ip_of(a)) + 1)
    with pytest.raises(ClientError) as refused:
        nodes[0].client.add_port("byhand", f"/run/netns/{cluster.make_ns('h')}", ip=spare,
                                 network="blue")
    assert refused.value.kind == "busy" and "lease" in str(refused.value)
    assert "fenced" in " ".join(i["what"] for i in
                                nodes[0].ctl_json("cluster", "status")["incidents"])

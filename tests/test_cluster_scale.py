"""Cluster mode at 1,000 nodes: simulated nodes are records in a real etcd,
written as real nodes write themselves. One real node, with a NetworkPolicy
in force over a pod of its own, takes in 1,000 nodes and their 30,000 pods
without ever losing its connection or listing everything again, and lets
them all go when they leave."""

from __future__ import annotations

import time

from helpers import simulate_nodes, wait_for

NODES, PODS = 1000, 30
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "db", "namespace": "shop"},
          "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}}


def test_a_node_keeps_up_with_1000_nodes_and_their_30000_pods(cluster):
    etcd = cluster.etcd()
    node = cluster.node(1)
    node.ctl("network", "create", "blue", "--vni", "100", "--subnet", "198.18.0.0/16",
             "--block-size", "27")
    wait_for("network", lambda: any(n["joined"] for n in node.ctl_json("network", "list")))
    node.client.apply_policies([POLICY])
    cluster.pod(node, "db", pod={"namespace": "shop", "name": "db0", "labels": {"app": "db"},
                                 "named_ports": {}})
    before = node.client.cluster_status()
    writer = simulate_nodes(cluster.hub_ns, etcd.urls["m0"], "blue", "198.18.0.0/16", 27, PODS,
                            NODES)
    polls, deadline = 0, time.monotonic() + 300
    while True:
        status = node.client.status()["cluster"]
        assert status["connected"], f"disconnected while applying: {status}"
        polls += 1
        if status["endpoints"] >= NODES * PODS + 1 and writer.poll() is not None:
            break
        assert time.monotonic() < deadline, f"not applied: {status}"
        time.sleep(0.05)
    assert writer.returncode == 0 and polls > 1
    after = node.client.cluster_status()
    assert after["counters"]["relists"] == before["counters"]["relists"]   # no re-list needed
    assert node.client.status()["peers"] == NODES
    # The policy sees every remote db pod (and the local one) as selected,
    # its rule every remote web pod as a peer.
    selected = node.client.policy("shop/db")["pods"]
    assert len(selected) == NODES * PODS // 2 + 1
    assert sum(p["node"] != "(this node)" for p in selected) == NODES * PODS // 2
    # They leave: every peer and remote pod goes with them.
    etcd.etcdctl("del", "--prefix", "/vswitch/nodes/sim")
    wait_for("simulated nodes gone", lambda: node.client.status()["peers"] == 0, timeout=60)
    wait_for("their pods no longer selected",
             lambda: len(node.client.policy("shop/db")["pods"]) == 1, timeout=60)
    assert node.client.status()["cluster"]["connected"]

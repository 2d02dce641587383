"""Forwarding threads with real TAPs: a queue per worker in each pod's
device, flows spread over the workers, and persistent devices re-attached
whatever the number of workers of the next start (and single-queue devices
an older daemon made)."""

from __future__ import annotations

import os

from conftest import in_ns

from vswitch.tap import Tap

# Many UDP flows (source ports) from a pod: its kernel spreads them over the
# TAP's queues by flow hash.
FLOWS = """
import socket
for port in range(20000, 20064):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    for _ in range(5):
        s.sendto(b"x" * 64, ("198.18.0.2", 9))
"""


def ping_ok(ns: str, ip: str) -> bool:
    return " 0% packet loss" in in_ns(ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", ip,
                                     check=False).stdout


def queues(ns: str, ifname: str = "eth0") -> int:
    return len([q for q in in_ns(ns, "ls", f"/sys/class/net/{ifname}/queues").stdout.split()
                if q.startswith("tx-")])


def frames_per_worker(d) -> list[int]:
    return [w["frames"] for w in d.ctl_json("stats")["workers"]]


def test_a_queue_per_worker_and_flows_spread_over_them(vswitchd, pods):
    d = vswitchd(datapath={"workers": 2})
    assert d.ctl_json("status")["workers"] == 2
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    assert queues(p["a"][0]) == 2
    assert ping_ok(p["a"][0], "198.18.0.2")
    before = frames_per_worker(d)
    in_ns(p["a"][0], "python3", "-c", FLOWS)
    after = frames_per_worker(d)
    assert all(a - b >= 20 for a, b in zip(after, before)), (before, after)


def test_workers_by_default_are_the_cpus_it_may_use(vswitchd):
    assert vswitchd().ctl_json("status")["workers"] == len(os.sched_getaffinity(0))


def test_persistent_taps_come_back_with_any_number_of_workers(vswitchd, pods):
    d = vswitchd(datapath={"workers": 2})
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    a, b = p["a"][0], p["b"][0]
    state = d.state_dir
    for workers in (1, 3):
        d.stop()
        d = vswitchd(datapath={"workers": workers}, state_dir=state)
        assert [x["state"] for x in d.ctl_json("port", "list")] == ["up", "up"]
        assert ping_ok(a, "198.18.0.2"), workers
    # A device an older daemon made with one queue: re-attached with it.
    d.stop()
    in_ns(b, "ip", "link", "del", "eth0")
    in_ns(b, "ip", "tuntap", "add", "dev", "eth0", "mode", "tap", "vnet_hdr")
    assert queues(b) == 1
    d = vswitchd(datapath={"workers": 3}, state_dir=state)
    assert [x["state"] for x in d.ctl_json("port", "list")] == ["up", "up"]
    assert ping_ok(a, "198.18.0.2") and ping_ok(b, "198.18.0.1")
    assert queues(a) == 3 and queues(b) == 1


def test_a_single_queue_device_is_opened_with_its_one_queue(netns):
    ns = netns("q")
    in_ns(ns, "ip", "tuntap", "add", "dev", "old0", "mode", "tap")
    tap = Tap(ns, "old0", "02:00:00:00:10:01", 1500, [], offloads=(), reattach=True, queues=4)
    try:
        assert len(tap.fds()) == 1
    finally:
        tap.close(remove=True)
    fresh = Tap(ns, "new0", "02:00:00:00:10:02", 1500, [], offloads=(), queues=4)
    try:
        assert len(fresh.fds()) == 4 and queues(ns, "new0") == 4
    finally:
        fresh.close(remove=True)

"""vswitch-cni, run exactly as a container runtime runs it: executed as
$CNI_PATH/vswitch with the CNI_* environment and the network config on
stdin, against a running vswitchd. IPAM state, port security and the host
port are checked through what pods can and cannot do."""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import in_ns, sh
from helpers import BLOCKED, Runtime

# This node's block of BLUE, with room for a handful of pods.
TINY = {"name": "tiny", "vni": 300, "subnet": "198.19.0.0/16", "block": "198.19.7.0/29",
        "mtu": 1500}


def addresses(ns, ifname="eth0"):
    info = json.loads(in_ns(ns, "ip", "-j", "addr", "show", ifname).stdout)[0]
    return info["address"], [f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"]
                             if a["family"] == "inet"]


def ping(ns, ip, count=2):
    return in_ns(ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1", ip, check=False)


def test_add_connects_a_pod_and_two_pods_talk(vswitchd, netns, cni_path):
    d = vswitchd(networks=(BLOCKED,))
    rt = Runtime(cni_path, d)
    a, b = netns("a"), netns("b")
    ra = rt.add(a, "ctr-a")
    rb = rt.add(b, "ctr-b")
    for ns, r in ((a, ra), (b, rb)):
        assert r["cniVersion"] == "1.1.0"
        [iface] = r["interfaces"]
        assert iface["name"] == "eth0" and iface["sandbox"] == f"/run/netns/{ns}"
        assert iface["mtu"] == 1500
        [ip] = r["ips"]
        assert ip["interface"] == 0 and ip["gateway"] == "198.18.4.1"
        address = ipaddress.IPv4Interface(ip["address"])
        assert address.ip in ipaddress.IPv4Network("198.18.4.0/24")
        assert address.network.prefixlen == 16          # the whole subnet is on-link
        assert address.ip not in (ipaddress.IPv4Address("198.18.4.0"),
                                  ipaddress.IPv4Address("198.18.4.1"))
        assert r["routes"] == []                        # no host port: no default route
        assert addresses(ns) == (iface["mac"], [ip["address"]])
    assert ra["ips"][0]["address"] != rb["ips"][0]["address"]
    other = ra["ips"][0]["address"].split("/")[0]
    assert " 0% packet loss" in ping(b, other).stdout
    shown = d.ctl_json("ipam", "show")
    assert {(x["container_id"], x["ip"], x["state"]) for x in shown["allocations"]} == {
        ("ctr-a", other, "up"), ("ctr-b", rb["ips"][0]["address"].split("/")[0], "up")}
    assert all(p["port_security"] for p in d.ctl_json("port", "list"))


def test_repeated_add_gives_the_same_address(vswitchd, netns, cni_path):
    d = vswitchd()
    rt = Runtime(cni_path, d)
    a = netns("a")
    first = rt.add(a)
    assert rt.add(a) == first
    # Also when the interface was lost meanwhile: the port is made again.
    in_ns(a, "ip", "link", "del", "eth0")
    again = rt.add(a)
    assert again["ips"] == first["ips"]
    assert again["interfaces"][0]["mac"] == first["interfaces"][0]["mac"]
    assert addresses(a)[1] == [first["ips"][0]["address"]]


def test_check_passes_then_fails_once_the_interface_is_gone(vswitchd, netns, cni_path):
    d = vswitchd()
    rt = Runtime(cni_path, d)
    a = netns("a")
    result = rt.add(a)
    assert rt.run("CHECK", a, conf={"prevResult": result}) == (0, None)
    # A prevResult that does not match what was made fails too.
    wrong = json.loads(json.dumps(result))
    wrong["ips"][0]["address"] = "198.18.9.9/16"
    rc, err = rt.run("CHECK", a, conf={"prevResult": wrong})
    assert rc != 0 and err["code"] == 103
    in_ns(a, "ip", "link", "del", "eth0")
    rc, err = rt.run("CHECK", a, conf={"prevResult": result})
    assert rc != 0 and err["code"] == 103, err
    # An address changed by hand is noticed as well.
    rt.add(a)
    in_ns(a, "ip", "addr", "flush", "dev", "eth0")
    rc, err = rt.run("CHECK", a, conf={"prevResult": result})
    assert rc != 0 and "lacks address" in err["msg"]


def test_del_is_idempotent_and_releases_the_address(vswitchd, netns, cni_path):
    d = vswitchd()
    rt = Runtime(cni_path, d)
    a = netns("a")
    rt.add(a)
    assert d.ctl_json("ipam", "show")["allocations"]
    assert rt.run("DEL", a) == (0, None)
    assert rt.run("DEL", a) == (0, None)
    assert rt.run("DEL", None, cid="never-added") == (0, None)
    assert d.ctl_json("ipam", "show")["allocations"] == []
    assert d.ctl_json("port", "list") == []
    assert "eth0" not in in_ns(a, "ip", "-o", "link").stdout
    # DEL after the namespace is gone still releases the address.
    b = netns("b")
    rt.add(b, "ctr-b")
    sh("ip", "netns", "del", b)
    assert rt.run("DEL", f"/run/netns/{b}", cid="ctr-b") == (0, None)
    assert d.ctl_json("ipam", "show")["allocations"] == []


def test_fifty_concurrent_adds_get_fifty_addresses(vswitchd, netns, cni_path):
    d = vswitchd(networks=(BLOCKED,))
    rt = Runtime(cni_path, d)
    namespaces = [netns(f"p{i}") for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda i: rt.run("ADD", namespaces[i], f"ctr-{i}"), range(50)))
    assert [rc for rc, _ in results] == [0] * 50, [r for r in results if r[0]]
    ips = {r["ips"][0]["address"] for _, r in results}
    macs = {r["interfaces"][0]["mac"] for _, r in results}
    assert len(ips) == 50 and len(macs) == 50
    assert len(d.ctl_json("ipam", "show")["allocations"]) == 50
    assert {p["addresses"][0] for p in d.ctl_json("port", "list")} == ips


def test_exhausted_block_errors_cleanly(vswitchd, netns, cni_path):
    d = vswitchd(networks=(TINY,))
    rt = Runtime(cni_path, d, network="tiny")
    # 198.19.7.0/29: .0 and .7 are the block's ends, .1 the gateway.
    got = {rt.add(netns(f"p{i}"), f"ctr-{i}")["ips"][0]["address"] for i in range(5)}
    assert got == {f"198.19.7.{i}/16" for i in range(2, 7)}
    assert d.ctl_json("ipam", "show")["networks"][0]["free"] == 0
    last = netns("last")
    rc, err = rt.run("ADD", last, "ctr-last")
    assert rc != 0 and err["code"] == 101 and "no free address" in err["msg"]
    assert len(d.ctl_json("ipam", "show")["allocations"]) == 5
    assert len(d.ctl_json("port", "list")) == 5
    assert "eth0" not in in_ns(last, "ip", "-o", "link").stdout
    rc, err = rt.run("STATUS")
    assert rc != 0 and err["code"] == 50
    # Freed addresses are handed out again.
    assert rt.run("DEL", None, "ctr-3") == (0, None)
    assert rt.add(last, "ctr-last")["ips"][0]["address"] == "198.19.7.5/16"


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_allocations_survive_a_daemon_restart(vswitchd, netns, cni_path, stop):
    d = vswitchd(networks=(BLOCKED,))
    rt = Runtime(cni_path, d)
    a, b = netns("a"), netns("b")
    first = rt.add(a, "ctr-a")
    if stop == "SIGKILL":
        d.proc.kill()
        d.proc.wait()
    else:
        d.stop()
    d2 = vswitchd(networks=(BLOCKED,), state_dir=d.state_dir)
    rt2 = Runtime(cni_path, d2)
    [kept] = d2.ctl_json("ipam", "show")["allocations"]
    assert (kept["container_id"], f"{kept['ip']}/16") == ("ctr-a", first["ips"][0]["address"])
    # A new pod does not get the address; the old one gets it back on ADD.
    assert rt2.add(b, "ctr-b")["ips"] != first["ips"]
    again = rt2.add(a, "ctr-a")
    assert again["ips"] == first["ips"] and again["interfaces"] == first["interfaces"]
    assert " 0% packet loss" in ping(b, first["ips"][0]["address"].split("/")[0]).stdout


def test_crash_during_adds_never_gives_an_address_twice(vswitchd, netns, cni_path):
    """SIGKILL the daemon while ADDs are under way; after the restart every
    pod's repeated ADD gets an address no other pod has, and the pods that
    got a result before the crash keep theirs."""
    import threading
    import time
    d = vswitchd(networks=(BLOCKED,))
    rt = Runtime(cni_path, d)
    namespaces = [netns(f"p{i}") for i in range(20)]
    results = {}

    def add(i):
        results[i] = rt.run("ADD", namespaces[i], f"ctr-{i}")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    while not any(rc == 0 for rc, _ in list(results.values())):
        time.sleep(0.01)
    d.proc.kill()
    d.proc.wait()
    for t in threads:
        t.join()
    before = {i: r["ips"][0]["address"] for i, (rc, r) in results.items() if rc == 0}
    assert before and len(set(before.values())) == len(before)
    d2 = vswitchd(networks=(BLOCKED,), state_dir=d.state_dir)
    rt2 = Runtime(cni_path, d2)
    after = {i: rt2.add(namespaces[i], f"ctr-{i}")["ips"][0]["address"] for i in range(20)}
    assert len(set(after.values())) == 20
    assert all(after[i] == ip for i, ip in before.items())


def test_spoofing_pod_is_cut_off_and_counted(vswitchd, netns, cni_path):
    d = vswitchd(networks=(BLOCKED,))
    rt = Runtime(cni_path, d)
    a, b = netns("a"), netns("b")
    rt.add(a, "ctr-a")
    target = rt.add(b, "ctr-b")["ips"][0]["address"].split("/")[0]
    assert " 0% packet loss" in ping(a, target).stdout

    def spoofed():
        return d.ctl_json("stats")["drops"]["spoofed_source"]

    # Another MAC: nothing of it gets through, every frame is counted.
    before = spoofed()
    in_ns(a, "ip", "link", "set", "eth0", "address", "02:00:00:00:66:66")
    in_ns(a, "ip", "neigh", "flush", "all")
    assert ping(a, target).returncode != 0
    assert spoofed() - before >= 2
    own_mac = d.ctl_json("ipam", "show")["allocations"][0]["mac"]
    in_ns(a, "ip", "link", "set", "eth0", "address", own_mac)
    assert " 0% packet loss" in ping(a, target).stdout
    # Another IP (one nobody holds): cut off as well.
    before = spoofed()
    in_ns(a, "ip", "addr", "flush", "dev", "eth0")
    in_ns(a, "ip", "addr", "add", "198.18.4.200/16", "dev", "eth0")
    assert ping(a, target).returncode != 0
    assert spoofed() - before >= 2
    assert "198.18.4.200" not in in_ns(b, "ip", "neigh").stdout


def test_chained_plugin_reads_prev_result(vswitchd, netns, cni_path):
    """A conflist of vswitch then the reference `tuning` plugin, run as a
    runtime runs a chain: each plugin gets the previous one's result."""
    d = vswitchd()
    rt = Runtime(cni_path, d, version="1.0.0", name="chain")
    a = netns("a")
    conflist = json.loads((Path(__file__).parent.parent / "examples/10-vswitch.conflist").read_text())
    assert [p["type"] for p in conflist["plugins"]][0] == "vswitch"
    tuning = {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}
    result = rt.add(a)
    conf = {"cniVersion": "1.0.0", "name": "chain", **tuning, "prevResult": result}
    rc, out = rt.run("ADD", a, stdin=json.dumps(conf), plugin="tuning")
    assert rc == 0, out
    assert out["interfaces"] == result["interfaces"] and out["ips"] == result["ips"]
    assert in_ns(a, "sysctl", "-n", "net.ipv4.conf.eth0.arp_notify").stdout.strip() == "1"
    # CHECK along the chain, then DEL in reverse order.
    assert rt.run("CHECK", a, conf={"prevResult": out}) == (0, None)
    rc, err = rt.run("CHECK", a, stdin=json.dumps(conf), plugin="tuning")
    assert rc == 0, err
    assert rt.run("DEL", a, stdin=json.dumps(conf), plugin="tuning")[0] == 0
    assert rt.run("DEL", a) == (0, None)
    assert d.ctl_json("ipam", "show")["allocations"] == []


def test_result_follows_the_config_version(vswitchd, netns, cni_path):
    d = vswitchd()
    old = Runtime(cni_path, d, version="0.4.0").add(netns("a"), "ctr-a")
    assert old["cniVersion"] == "0.4.0"
    assert old["ips"][0]["version"] == "4" and "mtu" not in old["interfaces"][0]
    v1 = Runtime(cni_path, d, version="1.0.0").add(netns("b"), "ctr-b")
    assert "version" not in v1["ips"][0] and "mtu" not in v1["interfaces"][0]
    rc, out = Runtime(cni_path, d).run("VERSION", stdin='{"cniVersion": "1.1.0"}')
    assert rc == 0 and out["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    # CHECK is 0.4.0+, STATUS and GC 1.1.0+.
    rc, err = Runtime(cni_path, d, version="0.3.1").run("CHECK", netns("c"))
    assert rc != 0 and err["code"] == 1
    rc, err = Runtime(cni_path, d, version="1.0.0").run("STATUS")
    assert rc != 0 and err["code"] == 1
    assert Runtime(cni_path, d).run("STATUS") == (0, None)


def test_static_address_and_mac_are_validated(vswitchd, netns, cni_path):
    d = vswitchd(networks=(BLOCKED,))
    rt = Runtime(cni_path, d)
    wanted = {"runtimeConfig": {"ips": ["198.18.4.50/16"], "mac": "02:00:00:00:04:50"}}
    r = rt.add(netns("a"), "ctr-a", conf=wanted)
    assert r["ips"][0]["address"] == "198.18.4.50/16"
    assert r["interfaces"][0]["mac"] == "02:00:00:00:04:50"
    r = rt.add(netns("b"), "ctr-b", env={"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=x;IP=198.18.4.51"})
    assert r["ips"][0]["address"] == "198.18.4.51/16"
    # Taken, outside the block, reserved, or a taken MAC: refused, nothing left.
    for request in ({"runtimeConfig": {"ips": ["198.18.4.50/16"]}},
                    {"runtimeConfig": {"ips": ["198.18.5.10/16"]}},
                    {"runtimeConfig": {"ips": ["198.18.4.1/16"]}},
                    {"runtimeConfig": {"ips": ["198.18.4.255/16"]}},
                    {"runtimeConfig": {"mac": "02:00:00:00:04:50"}}):
        c = netns("c")
        rc, err = rt.run("ADD", c, "ctr-c", conf=request)
        assert rc != 0 and err["code"] == 102, (request, err)
        assert "eth0" not in in_ns(c, "ip", "-o", "link").stdout
    assert len(d.ctl_json("ipam", "show")["allocations"]) == 2
    assert len(d.ctl_json("port", "list")) == 2


def test_bad_input_gets_the_right_error_and_leaves_nothing(vswitchd, netns, cni_path):
    d = vswitchd()
    rt = Runtime(cni_path, d)
    a = netns("a")
    cases = [
        (dict(stdin="{not json"), 6),
        (dict(stdin='["a list"]'), 6),
        (dict(conf={"cniVersion": "9.9.9"}), 1),
        (dict(conf={"cniVersion": None}), 1),
        (dict(env={"CNI_CONTAINERID": None}), 4),
        (dict(env={"CNI_IFNAME": None}), 4),
        (dict(env={"CNI_CONTAINERID": "bad id!"}), 4),
        (dict(env={"CNI_ARGS": "FOO=1"}), 4),
        (dict(env={"CNI_ARGS": "garbage"}), 4),
        (dict(env={"CNI_NETNS": "/run/netns/does-not-exist"}), 3),
        (dict(env={"CNI_NETNS": None}), 4),
        (dict(conf={"network": "nope"}), 7),
        (dict(conf={"mtu": 9000}), 7),
        (dict(conf={"socket": 5}), 7),
        (dict(conf={"runtimeConfig": {"ips": ["198.18.0.300/16"]}}), 7),
        (dict(conf={"runtimeConfig": {"ips": ["2001:db8::1/64"]}}), 102),    # no subnet6 here
        (dict(conf={"runtimeConfig": {"ips": ["198.18.0.9/16", "198.18.0.10/16"]}}), 7),
        (dict(conf={"socket": "/nonexistent/vswitchd.sock"}), 11),
    ]
    for kw, code in cases:
        rc, err = rt.run("ADD", a, **kw)
        assert rc != 0 and err["code"] == code, (kw, err)
        assert err["msg"] and "cniVersion" in err
    assert rt.run("ADD", a, env={"CNI_COMMAND": "FROB"})[1]["code"] == 4
    # Failing after the allocation (the interface name is taken in the pod)
    # gives the allocation back.
    in_ns(a, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    rc, err = rt.run("ADD", a)
    assert rc != 0 and err["code"] == 100 and "already exists" in err["msg"]
    assert d.ctl_json("ipam", "show")["allocations"] == []
    in_ns(a, "ip", "link", "del", "eth0")
    rc, err = rt.run("DEL", a, conf={"socket": "/nonexistent/vswitchd.sock"})
    assert rc != 0 and err["code"] == 11
    rc, err = rt.run("STATUS", conf={"socket": "/nonexistent/vswitchd.sock"})
    assert rc != 0 and err["code"] == 50
    assert d.ctl_json("ipam", "show")["allocations"] == []
    assert d.ctl_json("port", "list") == []
    assert "eth0" not in in_ns(a, "ip", "-o", "link").stdout
    assert d.proc.poll() is None


def test_gc_releases_what_is_gone(vswitchd, netns, cni_path):
    d = vswitchd()
    rt = Runtime(cni_path, d)
    a, b, c = netns("a"), netns("b"), netns("c")
    for ns in (a, b, c):
        rt.add(ns, f"ctr-{ns[-1]}")
    other = Runtime(cni_path, d, name="other-net")
    other.add(netns("d"), "ctr-d")
    # CNI GC: every attachment of this CNI network but the valid ones.
    valid = [{"containerID": "ctr-a", "ifname": "eth0"}, {"containerID": "ctr-b", "ifname": "eth0"}]
    assert rt.run("GC", conf={"cni.dev/valid-attachments": valid}) == (0, None)
    left = {x["container_id"] for x in d.ctl_json("ipam", "show")["allocations"]}
    assert left == {"ctr-a", "ctr-b", "ctr-d"}
    assert "eth0" not in in_ns(c, "ip", "-o", "link").stdout
    # vswitchctl ipam gc: those whose namespace is gone.
    sh("ip", "netns", "del", b)
    released = d.ctl_json("ipam", "gc")["released"]
    assert [x["container_id"] for x in released] == ["ctr-b"]
    left = {x["container_id"] for x in d.ctl_json("ipam", "show")["allocations"]}
    assert left == {"ctr-a", "ctr-d"}
    rc, err = rt.run("GC")
    assert rc != 0 and err["code"] == 7


def test_host_port_reaches_pods(vswitchd, netns, cni_path):
    node = netns("node")
    net = {**BLOCKED, "host_port": "vswh0"}
    d = vswitchd(networks=(net,), netns=node)
    rt = Runtime(cni_path, d)
    a = netns("a")
    r = rt.add(a)
    pod_ip = r["ips"][0]["address"].split("/")[0]
    assert r["routes"] == [{"dst": "0.0.0.0/0", "gw": "198.18.4.1"}]
    assert "default via 198.18.4.1 dev eth0" in in_ns(a, "ip", "route").stdout
    assert "198.18.4.1/16" in in_ns(node, "ip", "-o", "addr", "show", "vswh0").stdout
    assert " 0% packet loss" in ping(node, pod_ip).stdout
    # Off-subnet traffic goes to the host: the pod reaches the node's other address.
    in_ns(node, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
    assert " 0% packet loss" in ping(a, "192.0.2.10").stdout
    [host] = [p for p in d.ctl_json("port", "list") if p["name"] == "host-blue"]
    assert host["netns"] == "(host)" and not host["port_security"]
    assert d.ctl("port", "del", "host-blue", check=False).returncode != 0
    # Across a restart the host port stays, with the same MAC (pods' ARP
    # entries for the gateway stay right); `stop --remove-ports` removes it.
    assert d.stop() == 0
    assert host["mac"] in in_ns(node, "ip", "-o", "link", "show", "vswh0").stdout
    d2 = vswitchd(networks=(net,), netns=node, state_dir=d.state_dir)
    assert " 0% packet loss" in ping(node, pod_ip).stdout
    d2.ctl("stop", "--remove-ports")
    assert d2.proc.wait(10) == 0
    assert "vswh0" not in in_ns(node, "ip", "-o", "link").stdout
    assert "eth0" not in in_ns(a, "ip", "-o", "link").stdout


def test_manual_port_security_opt_out(vswitchd, pods):
    """Ports made by hand are secured when they have an address, unless
    they opt out; an opted-out pod may send from other addresses."""
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    assert p["a"][1]["port_security"]
    loose = pods(d, ("c", "198.18.0.3/16"), port_security=False)["c"]
    assert not loose[1]["port_security"]
    in_ns(loose[0], "ip", "addr", "add", "198.18.0.33/16", "dev", "eth0")
    r = in_ns(loose[0], "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "198.18.0.33",
              "198.18.0.2", check=False)
    assert " 0% packet loss" in r.stdout
    in_ns(p["a"][0], "ip", "addr", "add", "198.18.0.11/16", "dev", "eth0")
    r = in_ns(p["a"][0], "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "198.18.0.11",
              "198.18.0.2", check=False)
    assert r.returncode != 0


def test_ipam_and_hand_made_ports_never_share_an_address(vswitchd, netns, pods, cni_path):
    d = vswitchd(networks=(BLOCKED,))
    rt = Runtime(cni_path, d)
    hand = pods(d, ("h", "198.18.4.2/16"))["h"]
    assert rt.add(netns("a"), "ctr-a")["ips"][0]["address"] == "198.18.4.3/16"
    rc, err = rt.run("ADD", netns("b"), "ctr-b", conf={"runtimeConfig": {"ips": ["198.18.4.2/16"]}})
    assert rc != 0 and err["code"] == 102
    # The allocation holds the address even while its port is gone.
    d.ctl("port", "del", "ctr-a-eth0")
    r = d.ctl("port", "add", "x", "--netns", hand[0], "--ifname", "eth1", "--ip", "198.18.4.3/16",
              check=False)
    assert r.returncode != 0 and "allocated by IPAM" in r.stderr
    mac = d.ctl_json("ipam", "show")["allocations"][0]["mac"]
    r = d.ctl("port", "add", "y", "--netns", hand[0], "--ifname", "eth1", "--mac", mac, check=False)
    assert r.returncode != 0 and "already used" in r.stderr


"""The bench's lab: namespaces, and the switches compared in them (vswitchd
in bridge and overlay mode, the Linux bridge, kernel VXLAN, vde_switch,
Open vSwitch), each yielding its pods' namespaces. Beneath every bench
script."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time

PREFIX = "vb" + secrets.token_hex(2)
ADDRS = [f"198.18.0.{i}" for i in range(1, 5)]      # pods a, b (and c, d: flooder, flooded)
ADDR_A, ADDR_B, PLEN = ADDRS[0], ADDRS[1], 16
ADDRS6 = [f"2001:db8:18::{i}" for i in range(1, 5)]    # dual-stack: IPv6 TCP is measured too
ADDR6_B, PLEN6 = ADDRS6[1], 64
MTU = 1450            # fits a 1500-byte underlay in overlay mode; the same for every topology
DATAPATH = ""         # vswitchd's [datapath] settings (--datapath): the defaults unless asked


def sh(*args, **kw) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def ns_exec(ns: str, *args, **kw) -> str:
    return sh("ip", "netns", "exec", ns, *args, **kw)


@contextlib.contextmanager
def namespaces(*tags):
    names = [f"{PREFIX}-{t}" for t in tags]
    try:
        for n in names:
            sh("ip", "netns", "add", n)
            ns_exec(n, "ip", "link", "set", "lo", "up")
        yield names
    finally:
        for n in names:
            for pid in subprocess.run(["ip", "netns", "pids", n], capture_output=True,
                                      text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@contextlib.contextmanager
def vswitchd(tmp: str, name: str, node_ns: str | None = None, overlay: str = ""):
    """A vswitchd (in node_ns if given); yields the vswitchctl command."""
    sock = os.path.join(tmp, f"{name}.sock")
    config = os.path.join(tmp, f"{name}.toml")
    mode = "overlay" if overlay else "bridge"
    with open(config, "w") as f:
        f.write(f'[node]\nsocket = "{sock}"\nstate_dir = "{tmp}/{name}-state"\nmode = "{mode}"\n{overlay}'
                f'[datapath]\n{DATAPATH}\n'
                f'[[network]]\nname = "bench"\nvni = 1\nsubnet = "198.18.0.0/16"\nmtu = {MTU}\n'
                f'subnet6 = "2001:db8:18::/64"\n')
    where = ["ip", "netns", "exec", node_ns] if node_ns else []
    daemon = subprocess.Popen(where + [sys.executable, "-m", "vswitch.daemon", "--config", config],
                              stderr=open(os.path.join(tmp, f"{name}.log"), "w"))
    ctl = [sys.executable, "-m", "vswitch.ctl", "--socket", sock]
    try:
        for _ in range(200):
            if subprocess.run(ctl + ["status"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        yield ctl
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)


@contextlib.contextmanager
def vswitch_topology(with_ctl: bool = False, pods: int = 2):
    """Pods on vswitchd; yields their namespaces, and vswitchctl's command."""
    tags = ["va", "vb", "vc", "vd"][:pods]
    with namespaces(*tags) as names, tempfile.TemporaryDirectory() as tmp, \
            vswitchd(tmp, "node") as ctl:
        for tag, ns, addr, addr6 in zip(tags, names, ADDRS, ADDRS6):
            sh(*ctl, "port", "add", tag, "--netns", ns, "--ip", f"{addr}/{PLEN}",
               "--ip", f"{addr6}/{PLEN6}")
        yield (names, ctl) if with_ctl else names


@contextlib.contextmanager
def underlay(*tags):
    """Node namespaces on a bridged veth underlay: node i is 192.0.2.(i+1)."""
    with namespaces("u" + tags[0], *tags) as (hub, *nodes):
        ns_exec(hub, "ip", "link", "add", "ul", "type", "bridge")
        ns_exec(hub, "ip", "link", "set", "ul", "up")
        for i, node in enumerate(nodes):
            ns_exec(hub, "ip", "link", "add", f"ul{i}", "type", "veth", "peer", "name", "u0",
                    "netns", node)
            ns_exec(hub, "ip", "link", "set", f"ul{i}", "master", "ul", "up")
            ns_exec(node, "ip", "addr", "add", f"192.0.2.{i + 1}/24", "dev", "u0")
            ns_exec(node, "ip", "link", "set", "u0", "up")
        yield nodes


@contextlib.contextmanager
def vswitch_overlay_topology():
    """Two nodes running vswitchd in overlay mode, one pod each."""
    with underlay("v1", "v2") as (n1, n2), namespaces("va", "vb") as (a, b), \
            tempfile.TemporaryDirectory() as tmp, \
            vswitchd(tmp, "n1", n1, '[overlay]\nvtep_ip = "192.0.2.1"\npeers = ["192.0.2.2"]\n') as c1, \
            vswitchd(tmp, "n2", n2, '[overlay]\nvtep_ip = "192.0.2.2"\npeers = ["192.0.2.1"]\n') as c2:
        sh(*c1, "port", "add", "a", "--netns", a, "--ip", f"{ADDR_A}/{PLEN}",
           "--ip", f"{ADDRS6[0]}/{PLEN6}")
        sh(*c2, "port", "add", "b", "--netns", b, "--ip", f"{ADDR_B}/{PLEN}",
           "--ip", f"{ADDR6_B}/{PLEN6}")
        yield a, b


@contextlib.contextmanager
def kernel_vxlan_topology():
    """Two nodes with a Linux bridge and a kernel VXLAN device each."""
    with underlay("k1", "k2") as nodes, namespaces("ka", "kb") as pods:
        for i, (node, pod, addr) in enumerate(zip(nodes, pods, ADDRS)):
            ns_exec(node, "ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "4789",
                    "local", f"192.0.2.{i + 1}", "dev", "u0")
            ns_exec(node, "ip", "link", "add", "br0", "type", "bridge")
            ns_exec(node, "ip", "link", "set", "vx0", "master", "br0", "mtu", str(MTU), "up")
            bridge_pod(node, pod, addr, "pk")
            ns_exec(node, "ip", "link", "set", "br0", "up")
            ns_exec(node, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0",
                    "dst", f"192.0.2.{2 - i}")
        yield pods


def bridge_pod(bridge_ns: str, pod: str, addr: str, port: str):
    """A veth from the bridge br0 in bridge_ns to eth0 in pod."""
    ns_exec(bridge_ns, "ip", "link", "add", port, "mtu", str(MTU), "type", "veth",
            "peer", "name", "eth0", "netns", pod)
    ns_exec(bridge_ns, "ip", "link", "set", port, "master", "br0", "up")
    ns_exec(pod, "ip", "link", "set", "eth0", "mtu", str(MTU), "up")
    add_addresses(pod, addr)


def add_addresses(pod: str, addr: str):
    """A pod's IPv4 address and the IPv6 one of the same index (no DAD: at once)."""
    ns_exec(pod, "ip", "addr", "add", f"{addr}/{PLEN}", "dev", "eth0")
    ns_exec(pod, "ip", "addr", "add", f"{ADDRS6[ADDRS.index(addr)]}/{PLEN6}", "dev", "eth0",
            "nodad")


@contextlib.contextmanager
def linux_bridge_topology(pods: int = 2):
    """Pods on a Linux bridge (in its own namespace) over veth pairs."""
    tags = ["ka", "kb", "kc", "kd"][:pods]
    with namespaces("br", *tags) as (br, *names):
        ns_exec(br, "ip", "link", "add", "br0", "type", "bridge")
        ns_exec(br, "ip", "link", "set", "br0", "up")
        for i, (ns, addr) in enumerate(zip(names, ADDRS)):
            bridge_pod(br, ns, addr, f"p{i}")
        yield names


def wait_for_link(dev: str, timeout: float = 10.0):
    """Wait until dev exists in this namespace (a daemonised switch creates
    its TAPs after its parent returns)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(f"/sys/class/net/{dev}"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dev} did not appear within {timeout:g} s")
        time.sleep(0.01)


def pod_iface(pod: str, dev: str, addr: str):
    """Move dev into pod as eth0 and address it."""
    wait_for_link(dev)
    sh("ip", "link", "set", dev, "netns", pod)
    ns_exec(pod, "ip", "link", "set", dev, "name", "eth0", "mtu", str(MTU), "up")
    add_addresses(pod, addr)


@contextlib.contextmanager
def vde_topology(pods: int = 2):
    """Pods on vde_switch, each through a TAP of the switch's moved into it."""
    tags = ["da", "db", "dc", "dd"][:pods]
    with namespaces(*tags) as names, tempfile.TemporaryDirectory() as tmp:
        taps = [f"{PREFIX}d{i}" for i in range(pods)]
        sh("vde_switch", "-d", "-p", f"{tmp}/pid", "-s", f"{tmp}/sw", "-M", f"{tmp}/mgmt",
           *[x for tap in taps for x in ("-t", tap)])
        try:
            for tap, ns, addr in zip(taps, names, ADDRS):
                pod_iface(ns, tap, addr)
            yield names
        finally:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(open(f"{tmp}/pid").read()), signal.SIGTERM)


@contextlib.contextmanager
def ovs_topology(pods: int = 2):
    """Pods on Open vSwitch's userspace datapath (a netdev bridge), over veth
    pairs, with OVS's own database and daemons in a private directory. The
    pods turn transmit checksum offload off: OVS's userspace datapath stalls
    TCP between veths otherwise."""
    tags = ["oa", "ob", "oc", "od"][:pods]
    with namespaces(*tags) as names, tempfile.TemporaryDirectory() as tmp:
        db = f"unix:{tmp}/db.sock"
        vsctl = ["ovs-vsctl", f"--db={db}", "--timeout=30"]
        bridge = f"{PREFIX}ob"
        sh("ovsdb-tool", "create", f"{tmp}/conf.db", "/usr/share/openvswitch/vswitch.ovsschema")
        sh("ovsdb-server", f"{tmp}/conf.db", f"--remote=p{db}", f"--pidfile={tmp}/db.pid",
           f"--unixctl={tmp}/db.ctl", f"--log-file={tmp}/db.log", "--detach")
        try:
            sh(*vsctl, "--no-wait", "init")
            sh("ovs-vswitchd", db, f"--pidfile={tmp}/vswitchd.pid", f"--unixctl={tmp}/vswitchd.ctl",
               f"--log-file={tmp}/vswitchd.log", "--detach")
            sh(*vsctl, "add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev")
            for i, (ns, addr) in enumerate(zip(names, ADDRS)):
                port = f"{PREFIX}o{i}"
                sh("ip", "link", "add", port, "mtu", str(MTU), "type", "veth", "peer", "name",
                   f"{port}p")
                sh("ip", "link", "set", port, "up")
                sh(*vsctl, "add-port", bridge, port)
                pod_iface(ns, f"{port}p", addr)
                ns_exec(ns, "ethtool", "-K", "eth0", "tx", "off")
            yield names
        finally:
            subprocess.run([*vsctl, "--if-exists", "del-br", bridge], capture_output=True)
            for i in range(pods):
                subprocess.run(["ip", "link", "del", f"{PREFIX}o{i}"], capture_output=True)
            for daemon in ("vswitchd", "db"):
                subprocess.run(["ovs-appctl", "-t", f"{tmp}/{daemon}.ctl", "exit"], capture_output=True)

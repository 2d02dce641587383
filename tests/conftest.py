"""Fixtures for tests on real TAPs and network namespaces (SPEC section 6).

Every namespace a test makes has this run's unique prefix and is deleted at
teardown, pass or fail; every daemon is stopped. Addresses come only from
198.18.0.0/15 and only live inside those namespaces.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vswitch.client import Client, ClientError
from vswitch.netns import entered

RUN_PREFIX = "vt" + secrets.token_hex(2)          # e.g. vt3fa2
CTL = [sys.executable, "-m", "vswitch.ctl"]
DAEMON = [sys.executable, "-m", "vswitch.daemon"]


def sh(*args, check=True, timeout=60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, timeout=timeout, capture_output=True, text=True, **kw)


def in_ns(ns: str, *args, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, **kw)


def toml_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


def write_toml(path: Path, config: dict):
    """Enough TOML for our configs: tables of scalars and arrays of tables."""
    lines = []
    for section, body in config.items():
        for table in body if isinstance(body, list) else [body]:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")


class Daemon:
    def __init__(self, config_path: Path, socket_path: str, log_path: Path,
                 netns: str | None = None, env: dict | None = None):
        self.socket = socket_path
        self.config_path = config_path
        self.log_path = log_path
        self.client = Client(socket_path)
        where = ["ip", "netns", "exec", netns] if netns else []     # a "node" namespace
        self.proc = subprocess.Popen(where + DAEMON + ["--config", str(config_path)],
                                     stdout=subprocess.DEVNULL, stderr=open(log_path, "w"),
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client.status()
                return
            except ClientError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"vswitchd did not start:\n{log_path.read_text()}") from None
                time.sleep(0.05)

    def ctl(self, *args, check=True) -> subprocess.CompletedProcess:
        """Run vswitchctl (the real CLI) against this daemon."""
        r = subprocess.run(CTL + ["--socket", self.socket, *args], capture_output=True,
                           text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"vswitchctl {' '.join(args)} failed: {r.stderr}")
        return r

    def ctl_json(self, *args):
        return json.loads(self.ctl(*args, "--json").stdout)

    def stop(self, timeout=10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


UNIT = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(config, items):
    """Everything outside tests/unit is a system test (root, namespaces, TAPs,
    daemons): `pytest -m "not system"` or `pytest tests/unit` leaves them out."""
    for item in items:
        if UNIT not in Path(item.fspath).parents:
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind():
    """After the whole run: no namespace of ours, no TAP of a daemon's."""
    yield
    left = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith(RUN_PREFIX)]
    left += [line.split(":")[1].strip() for line in sh("ip", "-o", "link").stdout.splitlines()
             if line.split(":")[1].strip().startswith("vsw")]
    left += [t for t in sh("nft", "list", "tables").stdout.splitlines()
             if t in ("table ip vswitch", "table ip6 vswitch")]
    assert left == [], f"left behind: {left}"


@pytest.fixture
def netns():
    """Factory: make_ns("a") creates namespace <prefix>-<n>a with lo up and
    IPv6 off (so pods send nothing we did not ask for) unless ipv6=True."""
    made = []

    def make(tag: str, ipv6: bool = False) -> str:
        name = f"{RUN_PREFIX}-{len(made)}{tag}"
        sh("ip", "netns", "add", name)
        made.append(name)
        in_ns(name, "ip", "link", "set", "lo", "up")
        for key in ("all", "default") if not ipv6 else ():
            in_ns(name, "sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1")
        return name

    yield make
    for name in made:
        # Processes a test started in the namespace would outlive it.
        pids = sh("ip", "netns", "pids", name, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        sh("ip", "netns", "del", name, check=False)


UNDERLAY = "192.0.2"                      # the nodes' underlay (TEST-NET-1)
ETCD_IP = f"{UNDERLAY}.250"
RUN = secrets.token_hex(4)                # in container ids of this run
BLUE = {"name": "blue", "vni": 100, "subnet": "198.18.0.0/16", "mtu": 1500}
RED = {"name": "red", "vni": 200, "subnet": "198.19.0.0/16", "mtu": 1500}


@pytest.fixture
def vswitchd(tmp_path):
    """Factory: start a vswitchd with a config (dict of TOML tables)."""
    daemons = []

    def start(aging_time: float = 300, networks=(BLUE, RED), netns=None, mode="bridge",
              state_dir=None, env=None, node=None, **extra) -> Daemon:
        """state_dir: to start a daemon on an earlier one's state; env: added
        to its environment; node: more [node] keys; extra: more tables."""
        sock = str(tmp_path / f"vswitchd{len(daemons)}.sock")
        state_dir = state_dir or str(tmp_path / f"state{len(daemons)}")
        config = {"node": {"name": f"test-node{len(daemons)}", "socket": sock, "mode": mode,
                           "state_dir": state_dir, **(node or {})},
                  "fdb": {"aging_time": aging_time}, "network": list(networks), **extra}
        path = tmp_path / f"vswitchd{len(daemons)}.toml"
        write_toml(path, config)
        daemon = Daemon(path, sock, tmp_path / f"vswitchd{len(daemons)}.log", netns, env)
        daemon.state_dir, daemon.config = state_dir, config
        daemons.append(daemon)
        return daemon

    yield start
    for d in daemons:
        d.stop()


@pytest.fixture
def pods(netns, vswitchd):
    """Factory: pods(daemon, ("a", "198.18.0.1/16"), ("c", "198.19.0.1/16", "red"))
    makes a namespace per pod and attaches it (port security on unless
    port_security=False); returns {tag: (ns, port info)}."""

    def attach(daemon: Daemon, *specs, port_security=True, ipv6=False):
        out = {}
        for spec in specs:
            tag, ip, network = (*spec, "blue")[:3]
            ns = netns(tag, ipv6)
            info = daemon.ctl_json("port", "add", f"pod-{tag}", "--netns", ns, "--ip", ip,
                                   "--network", network,
                                   *([] if port_security else ["--no-port-security"]))
            out[tag] = (ns, info)
        return out

    return attach


def packet_socket(ns: str, ifname: str = "eth0"):
    """A raw AF_PACKET socket bound to ifname inside namespace ns."""
    import socket
    with entered(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((ifname, 0))
    return s


class Capture:
    """tcpdump on an interface of a namespace, read back with scapy."""

    def __init__(self, ns: str, bpf: str, path: Path, ifname: str = "eth0"):
        self.path = path
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpdump", "-i", ifname, "-n", "-U", "--immediate-mode",
             "-w", str(path), bpf],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()        # "listening on eth0, ..."
        if "listening" not in line:
            self.proc.kill()
            raise RuntimeError(f"tcpdump did not start: {line}{self.proc.stderr.read()}")

    def stop(self):
        time.sleep(0.3)                           # let in-flight frames land
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        import scapy.layers.inet  # noqa: F401  (registers Ethernet/IP decoding)
        from scapy.utils import rdpcap
        return list(rdpcap(str(self.path)))


# Whole set-ups several modules use (their helpers: helpers.py).

@pytest.fixture
def cni_path(tmp_path):
    """A CNI_PATH holding the plugin under the name runtimes look for."""
    path = tmp_path / "cni-bin"
    path.mkdir()
    (path / "vswitch").symlink_to(shutil.which("vswitch-cni"))
    return path


@pytest.fixture
def underlay(netns):
    """Factory: node(i) makes a namespace joined to the underlay as 192.0.2.i."""
    hub = netns("ul")
    in_ns(hub, "ip", "link", "add", "ul", "type", "bridge")
    in_ns(hub, "ip", "link", "set", "ul", "up")

    def node(i: int) -> str:
        ns = netns(f"n{i}")
        in_ns(hub, "ip", "link", "add", f"ul{i}", "type", "veth", "peer", "name", "u0", "netns", ns)
        in_ns(hub, "ip", "link", "set", f"ul{i}", "master", "ul", "up")
        in_ns(ns, "ip", "addr", "add", f"{UNDERLAY}.{i}/24", "dev", "u0")
        in_ns(ns, "ip", "link", "set", "u0", "up")
        return ns

    return node


@pytest.fixture
def cluster(netns, tmp_path):
    """A hub namespace with the underlay bridge and etcd; node(i, ...) starts
    a vswitchd in a new namespace 192.0.2.i; pod(node, tag) attaches a pod
    through the daemon's CNI API; etcd(members=N, tls=...) starts etcd."""
    from helpers import Etcd  # (helpers imports conftest)
    hub = netns("ul")
    in_ns(hub, "ip", "link", "add", "ul", "type", "bridge")
    in_ns(hub, "ip", "addr", "add", f"{ETCD_IP}/24", "dev", "ul")
    in_ns(hub, "ip", "link", "set", "ul", "up")
    state: dict = {"etcd": None, "daemons": [], "namespaces": {}}

    class Cluster:
        hub_ns = hub
        make_ns = staticmethod(netns)

        current: Etcd | None = None
        ipv6 = False                # IPv6 on in the nodes' and pods' namespaces

        @staticmethod
        def etcd(members=1, tls=None) -> Etcd:
            state["etcd"] = Cluster.current = Etcd(hub, tmp_path, members, tls)
            return state["etcd"]

        @staticmethod
        def node_ns(i: int) -> str:
            if i not in state["namespaces"]:
                ns = netns(f"n{i}", Cluster.ipv6)
                in_ns(hub, "ip", "link", "add", f"ul{i}", "type", "veth", "peer", "name", "u0",
                      "netns", ns)
                in_ns(hub, "ip", "link", "set", f"ul{i}", "master", "ul", "up")
                in_ns(ns, "ip", "addr", "add", f"{UNDERLAY}.{i}/24", "dev", "u0")
                in_ns(ns, "ip", "link", "set", "u0", "up")
                state["namespaces"][i] = ns
            return state["namespaces"][i]

        @staticmethod
        def config(i: int, extra: dict | None = None, **cluster_keys) -> Path:
            path = tmp_path / f"node{i}.toml"
            etcd = state["etcd"]
            keys = {"etcd": [etcd.urls[n] for n in etcd.names], "lease_ttl": 3, **cluster_keys}
            write_toml(path, {"node": {"name": f"node{i}", "socket": str(tmp_path / f"n{i}.sock"),
                                       "state_dir": str(tmp_path / f"state{i}")},
                              "overlay": {"vtep_ip": f"{UNDERLAY}.{i}"}, "cluster": keys,
                              **(extra or {})})
            return path

        @staticmethod
        def node(i: int, config: Path | None = None, **cluster_keys) -> Daemon:
            ns = Cluster.node_ns(i)
            path = config or Cluster.config(i, **cluster_keys)
            d = Daemon(path, str(tmp_path / f"n{i}.sock"), tmp_path / f"node{i}.log", ns)
            d.ns, d.name = ns, f"node{i}"
            state["daemons"].append(d)
            return d

        @staticmethod
        def pod(d: Daemon, tag: str, network: str = "blue", pod: dict | None = None) -> dict:
            ns = netns(tag, Cluster.ipv6)
            r = d.client.attach(f"c{RUN}{tag}", "eth0", f"/run/netns/{ns}", network=network,
                                pod=pod)
            r["ns"] = ns
            return r

    yield Cluster
    for d in state["daemons"]:
        d.stop()
    if state["etcd"]:
        state["etcd"].stop()


@pytest.fixture
def cni_runtime(cni_path):  # noqa: F811  (the fixture imported above)
    """Factory: the real plugin, run as a runtime runs it, against a node."""
    from helpers import Runtime  # (helpers imports conftest)
    return lambda daemon: Runtime(cni_path, daemon)

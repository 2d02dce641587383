"""What several system test modules share: helpers (ping, a 50 MB TCP
transfer, VXLAN datagrams, a kernel VXLAN node, the CNI runtime, captures
read back with tshark, waiting on a condition) and the fixtures of whole
set-ups (the CNI plugin, an underlay, a cluster on a real etcd). Imported
from here, never from another test module."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import BLUE, CTL, ETCD_IP, RED, UNDERLAY, Daemon, in_ns

from vswitch.netns import entered

IPERF_PORT = "5201"


def ping(ns: str, addr: str, count: int = 3, check=True, interval="0.05"):
    return in_ns(ns, "ping", "-c", str(count), "-i", interval, "-W", "2", addr, check=check)


SINK = """
import hashlib, socket, sys
srv = socket.create_server((sys.argv[2], int(sys.argv[1])),
                           family=socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET)
print("ready", flush=True)
conn, _ = srv.accept()
h, n = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    h.update(chunk); n += len(chunk)
print(n, h.hexdigest(), flush=True)
"""


def tcp_transfer_50mb(d, p, tmp_path, to: str = "198.18.0.2") -> dict:
    """Send 50 MB of random data from pod a to pod b (at address `to`) over
    TCP; check it arrives intact; returns pod a's port (with counters)."""
    data = os.urandom(50 * 1024 * 1024)
    src = tmp_path / "payload"
    src.write_bytes(data)
    sink = subprocess.Popen(["ip", "netns", "exec", p["b"][0], sys.executable, "-c", SINK, "7001",
                             to], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout.readline().strip() == "ready"
        send = (f"import socket,sys; s=socket.create_connection(('{to}',7001));"
                "s.sendfile(open(sys.argv[1],'rb')); s.close()")
        in_ns(p["a"][0], sys.executable, "-c", send, str(src), timeout=120)
        size, digest = sink.stdout.readline().split()
        sink.wait(30)
    finally:
        sink.kill()
    assert int(size) == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    sender = d.ctl_json("port", "show", "pod-a")
    assert sender["counters"]["rx_bytes"] > len(data)
    return sender


REFERENCE_PLUGINS = Path("/usr/lib/cni")      # Debian's containernetworking-plugins


class Runtime:
    """Plays the container runtime: builds the environment and stdin."""

    def __init__(self, cni_path: Path, daemon, network="blue", version="1.1.0", name="vsw-test"):
        self.cni_path, self.daemon = cni_path, daemon
        self.conf = {"cniVersion": version, "name": name, "type": "vswitch",
                     "network": network, "socket": daemon.socket}

    def run(self, command, ns=None, cid="ctr-1", ifname="eth0", conf=None, stdin=None,
            env=None, plugin="vswitch"):
        environ = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
                   "CNI_IFNAME": ifname, "CNI_PATH": f"{self.cni_path}:{REFERENCE_PLUGINS}"}
        if ns:
            environ["CNI_NETNS"] = ns if ns.startswith("/") else f"/run/netns/{ns}"
        environ.update(env or {})
        environ = {k: v for k, v in environ.items() if v is not None}
        if stdin is None:
            stdin = json.dumps({**self.conf, **(conf or {})})
        exe = self.cni_path / plugin if plugin == "vswitch" else REFERENCE_PLUGINS / plugin
        r = subprocess.run([str(exe)], input=stdin, env=environ, capture_output=True, text=True,
                           timeout=60)
        out = json.loads(r.stdout) if r.stdout.strip() else None
        return r.returncode, out

    def add(self, ns, cid="ctr-1", **kw):
        rc, out = self.run("ADD", ns, cid, **kw)
        assert rc == 0, out
        return out


def overlay_node(vswitchd, node_ns: str, i: int, peers=(), networks=(BLUE, RED), **overlay):
    net = [{**n, "mtu": 1450} for n in networks]
    return vswitchd(netns=node_ns, mode="overlay", networks=net,
                    overlay={"vtep_ip": f"{UNDERLAY}.{i}",
                             "peers": [f"{UNDERLAY}.{p}" for p in peers], **overlay})


def vxlan(vni: int, inner: bytes, flags: int = 0x08, reserved: bytes = b"\0\0\0") -> bytes:
    return bytes([flags]) + reserved + vni.to_bytes(3, "big") + b"\0" + inner


def send_udp(ns: str, src_ip: str, payloads, dst=f"{UNDERLAY}.1"):
    with entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src_ip, 0))
    for data in payloads:
        s.sendto(data, (dst, 4789))
    s.close()
    time.sleep(0.3)


def kernel_node(node_ns: str, pod_ns: str, peer: str, vni=100, local=f"{UNDERLAY}.2",
                mtu=1450):
    """A node without vswitchd: Linux bridge + kernel VXLAN, one pod on a veth."""
    run = lambda *a: in_ns(node_ns, *a)     # noqa: E731
    run("ip", "link", "add", "vx0", "type", "vxlan", "id", str(vni), "dstport", "4789",
        "local", local, "dev", "u0")
    run("ip", "link", "add", "br0", "type", "bridge")
    run("ip", "link", "set", "vx0", "master", "br0", "mtu", str(mtu), "up")
    run("ip", "link", "add", "pk", "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
        "netns", pod_ns)
    run("ip", "link", "set", "pk", "master", "br0", "up")
    run("ip", "link", "set", "br0", "up")
    run("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", peer)
    # A veth underlay hands partial inner checksums to the receiving socket
    # as they are (a NIC would complete them): make the kernel complete them.
    run("ethtool", "-K", "u0", "tx", "off")
    in_ns(pod_ns, "ip", "link", "set", "eth0", "mtu", str(mtu), "up")
    in_ns(pod_ns, "ip", "addr", "add", "198.18.0.2/16", "dev", "eth0")


class CaptureRun:
    """vswitchctl capture in the background."""

    def __init__(self, daemon, *args, stdout=subprocess.PIPE):
        before = daemon.ctl_json("stats")["capture"]["sessions"]
        self.proc = subprocess.Popen(CTL + ["--socket", daemon.socket, "capture", *args],
                                     stdout=stdout, stderr=subprocess.PIPE)
        # Started once the daemon counts the session.
        deadline = time.monotonic() + 10
        while daemon.ctl_json("stats")["capture"]["sessions"] == before:
            assert self.proc.poll() is None, self.proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def wait(self, timeout=20):
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err.decode()


def tshark(path, *fields, display_filter=None):
    """Rows of fields that tshark reads from a capture file."""
    args = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    args += [x for f in fields for x in ("-e", f)]
    if display_filter:
        args += ["-Y", display_filter]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line.split("|") for line in r.stdout.splitlines()]


def wait_for(what, condition, timeout=10.0, interval=0.02):
    """Poll condition() until it returns something true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Etcd:
    """etcd members in the hub namespace, each with its own data directory."""

    def __init__(self, hub: str, tmp: Path, members: int = 1, tls: dict | None = None):
        self.hub, self.tmp, self.tls = hub, tmp, tls or {}
        self.names = [f"m{i}" for i in range(members)]
        self.procs: dict[str, subprocess.Popen] = {}
        scheme = "https" if tls else "http"
        self.urls = {n: f"{scheme}://{ETCD_IP}:{2379 + 2 * i}" for i, n in enumerate(self.names)}
        self.peer_urls = {n: f"http://{ETCD_IP}:{2380 + 2 * i}" for i, n in enumerate(self.names)}
        self.cluster = ",".join(f"{n}={u}" for n, u in self.peer_urls.items())
        self.token = "vt" + secrets.token_hex(4)
        for name in self.names:
            self.start(name, new=True)
        for name in self.names:
            self.wait_healthy(name)

    def start(self, name: str, new: bool = False):
        args = ["etcd", "--name", name, "--data-dir", str(self.tmp / f"etcd-{name}"),
                "--listen-client-urls", self.urls[name], "--advertise-client-urls", self.urls[name],
                "--listen-peer-urls", self.peer_urls[name],
                "--initial-advertise-peer-urls", self.peer_urls[name],
                "--initial-cluster", self.cluster, "--initial-cluster-token", self.token,
                "--initial-cluster-state", "new"]
        if self.tls:
            args += ["--cert-file", self.tls["cert"], "--key-file", self.tls["key"],
                     "--trusted-ca-file", self.tls["ca"], "--client-cert-auth"]
        self.procs[name] = subprocess.Popen(
            ["ip", "netns", "exec", self.hub, *args], stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"etcd-{name}.log", "a"))

    def etcdctl(self, *args, check=True) -> subprocess.CompletedProcess:
        env = {**os.environ, "ETCDCTL_API": "3"}
        tls = ["--cacert", self.tls["ca"], "--cert", self.tls["cert"], "--key", self.tls["key"]] \
            if self.tls else []
        return subprocess.run(["ip", "netns", "exec", self.hub, "etcdctl", "--endpoints",
                               ",".join(self.urls[n] for n in self.procs), *tls, *args],
                              capture_output=True, text=True, timeout=30, env=env, check=check)

    def wait_healthy(self, name: str):
        wait_for(f"etcd member {name}", lambda: self.etcdctl(
            "--endpoints", self.urls[name], "endpoint", "health", check=False).returncode == 0,
            timeout=20, interval=0.1)

    def stop(self, name: str | None = None):
        for n in [name] if name else list(self.procs):
            proc = self.procs.pop(n)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def get(self, key: str):
        out = self.etcdctl("get", key, "--print-value-only").stdout.strip()
        return json.loads(out) if out else None

    def keys(self, prefix: str) -> list[str]:
        return self.etcdctl("get", prefix, "--prefix", "--keys-only").stdout.split()


def ip_of(pod: dict) -> str:
    return pod["ip"].split("/")[0]


def peers(d: Daemon) -> set[str]:
    return {p["ip"] for p in d.ctl_json("peer", "list")}


BLOCKED = {**BLUE, "block": "198.18.4.0/24"}


def tcp_bps(client_ns: str, server_ns: str, server_ip: str, seconds: int = 2) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if "5201" in in_ns(server_ns, "ss", "-ltn").stdout:
                break
        out = in_ns(client_ns, "iperf3", "-c", server_ip, "-t", str(seconds), "-J",
                    timeout=seconds + 30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"]
    finally:
        server.kill()
        server.wait()


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(10)

    def next(self) -> dict:
        fields = self.sock.recv(4096).decode().split("\n")
        return dict(f.split("=", 1) for f in fields)

    def until(self, key: str) -> list[dict]:
        """Messages up to and including the first that has `key`."""
        seen = []
        while not seen or key not in seen[-1]:
            seen.append(self.next())
        return seen


def simulate_nodes(hub: str, url: str, network: str, subnet: str, block: int, pods: int,
                   count: int) -> subprocess.Popen:
    """Start writing `count` simulated nodes with `pods` endpoints each (pod
    shop/simK-i, labelled app=web or app=db), as real nodes write themselves:
    bench/cluster.py's writer, in the hub namespace (etcd's client runs
    threads of its own: entering the namespace from this one is not enough)."""
    bench = Path(__file__).resolve().parent.parent / "bench" / "cluster.py"
    return subprocess.Popen(["ip", "netns", "exec", hub, sys.executable, str(bench), "--simulate",
                             "0", str(count), "--etcd", url, "--network", network, "--subnet",
                             subnet, "--block", str(block), "--pods", str(pods)],
                            stdout=subprocess.DEVNULL)

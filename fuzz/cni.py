"""The CNI plugin's stdin and environment: every input ends in the spec's
result or error JSON, never a traceback. The daemon is a stand-in that
answers like the real one."""

import json

import atheris

from vswitch import cni
from vswitch.client import ClientError


class FakeClient:
    def __init__(self, *args):
        pass

    def attach(self, container_id, ifname, netns, **options):
        if options.get("ip") == "198.18.0.99":
            raise ClientError("taken", 409, "unavailable")
        return {"ifname": ifname, "mac": "02:00:00:00:00:01", "mtu": 1450,
                "ip": "198.18.0.5/16", "gateway": "198.18.0.1",
                "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}]}

    def detach(self, *args):
        return {}

    def check_attachment(self, container_id, ifname, netns):
        return self.attach(container_id, ifname, netns)

    def ipam(self, network=None):
        return {"networks": [{"name": "default", "free": 3}]}

    def ipam_gc(self, *args):
        return {"released": []}


def setup():
    cni.Client = FakeClient


def value(fdp, depth=0):
    """A random JSON value: what a runtime or a chained plugin might put in a field."""
    kind = fdp.ConsumeIntInRange(0, 7 if depth < 3 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-2**40, 2**70)
    if kind == 3:
        return fdp.PickValueInList(["198.18.0.7/16", "198.18.0.99", "02:00:00:00:00:09",
                                    "eth0", "1.1.0", "", fdp.ConsumeUnicodeNoSurrogates(12)])
    if kind == 4:
        return fdp.ConsumeFloat()
    if kind == 5:
        return [value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    keys = ["ips", "mac", "bandwidth", "interfaces", "routes", "dns", "cni", "name", "sandbox",
            "address", "ingressRate", "egressBurst", "containerID", "ifname", "labels"]
    return {fdp.PickValueInList(keys): value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 4))}


FIELDS = ("runtimeConfig", "args", "prevResult", "mtu", "network", "socket", "dns",
          "cni.dev/valid-attachments", "name")


def one_input(data: bytes):
    fdp = atheris.FuzzedDataProvider(data)
    env = {"CNI_COMMAND": fdp.PickValueInList(["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION",
                                               "ADD "]),
           "CNI_CONTAINERID": fdp.PickValueInList(["ctr-1", "", "-x", "a" * 300, "c/../d"]),
           "CNI_NETNS": fdp.PickValueInList(["/proc/self/ns/net", "/nonexistent", ""]),
           "CNI_IFNAME": fdp.PickValueInList(["eth0", "", "x" * 20]),
           "CNI_ARGS": fdp.PickValueInList(["", "IP=198.18.0.7", "K8S_POD_NAME=p;IgnoreUnknown=1",
                                            "X=1", "MAC=02:00:00:00:00:09;IP=bad", "=;;"]),
           "CNI_PATH": "/nonexistent"}
    if fdp.ConsumeBool():
        conf = {"cniVersion": fdp.PickValueInList(["1.1.0", "1.0.0", "0.4.0", "0.3.1", "9"]),
                "type": "vswitch"}
        for field in FIELDS:
            if fdp.ConsumeBool():
                conf[field] = value(fdp)
        stdin = json.dumps(conf)
    else:
        stdin = fdp.ConsumeUnicodeNoSurrogates(4000)
    code, out = cni.run(env, stdin)
    assert code in (0, 1)
    if code:
        assert isinstance(out["code"], int) and isinstance(out["msg"], str)
        # The last resort answers with the spec's JSON, but reaching it is a bug.
        assert out["msg"] != cni.LAST_RESORT, out["details"]
    json.dumps(out)


def seeds() -> list[bytes]:
    return [bytes(range(i, i + 64)) for i in range(0, 192, 16)]

"""The CNI plugin's request and result handling (cni.run), with a stand-in
for the daemon: the spec's JSON for every input, codes per failure."""

from __future__ import annotations

import json

import pytest

from vswitch import cni
from vswitch.client import ClientError

ATTACHED = {"ifname": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1450, "ip": "198.18.0.5/16",
            "gateway": "198.18.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.0.1"}]}


class FakeDaemon:
    calls: list = []
    error: ClientError | None = None

    def __init__(self, socket_path):
        self.socket_path = socket_path

    def _answer(self, name, *args, **kw):
        FakeDaemon.calls.append((name, args, kw))
        if FakeDaemon.error:
            raise FakeDaemon.error
        return ATTACHED

    def attach(self, *args, **kw):
        return self._answer("attach", *args, **kw)

    def detach(self, *args):
        return self._answer("detach", *args)

    def check_attachment(self, *args):
        return self._answer("check", *args)


@pytest.fixture(autouse=True)
def daemon(monkeypatch):
    monkeypatch.setattr(cni, "Client", FakeDaemon)
    FakeDaemon.calls, FakeDaemon.error = [], None
    return FakeDaemon


def env(command="ADD", **extra):
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": "ctr-1", "CNI_NETNS": "/proc/self/ns/net",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/nonexistent", **extra}


def conf(**extra):
    return json.dumps({"cniVersion": "1.1.0", "name": "pods", "type": "vswitch", **extra})


def test_add_returns_the_spec_result_after_the_previous_plugins():
    prev = {"interfaces": [{"name": "lo"}], "ips": [], "routes": [{"dst": "10.0.0.0/8"}],
            "dns": {"nameservers": ["192.0.2.53"]}}
    code, out = cni.run(env(), conf(prevResult=prev, mtu=1400))
    assert code == 0
    assert out["cniVersion"] == "1.1.0"
    assert out["interfaces"][1] == {"name": "eth0", "mac": ATTACHED["mac"],
                                    "sandbox": "/proc/self/ns/net", "mtu": 1450}
    assert out["ips"] == [{"address": "198.18.0.5/16", "gateway": "198.18.0.1", "interface": 1}]
    assert out["routes"] == [{"dst": "10.0.0.0/8"}, *ATTACHED["routes"]]
    assert out["dns"] == prev["dns"]
    name, args, kw = FakeDaemon.calls[0]
    assert (name, args[:2], kw["mtu"], kw["cni_network"]) == ("attach", ("ctr-1", "eth0"), 1400, "pods")


def test_older_versions_get_their_own_result_shape():
    code, out = cni.run(env(), conf(cniVersion="0.4.0"))
    assert code == 0 and out["ips"][0]["version"] == "4" and "mtu" not in out["interfaces"][0]


def test_static_address_and_mac_and_bandwidth_reach_the_daemon():
    code, _ = cni.run(env(CNI_ARGS="IP=198.18.0.9;K8S_POD_NAME=p"),
                      conf(runtimeConfig={"mac": "02:00:00:00:00:09",
                                          "bandwidth": {"ingressRate": 1000, "egressRate": 2000}}))
    assert code == 0
    kw = FakeDaemon.calls[0][2]
    assert (kw["ip"], kw["mac"]) == ("198.18.0.9", "02:00:00:00:00:09")
    assert kw["rates"] == {"egress_rate": 1000, "ingress_rate": 2000}


@pytest.mark.parametrize("environ, stdin, code", [
    (env(), "{not json", cni.BAD_CONTENT),
    (env(), conf(cniVersion="9.9.9"), cni.INCOMPATIBLE_VERSION),
    (env(CNI_CONTAINERID="-bad"), conf(), cni.INVALID_ENV),
    (env(CNI_ARGS="FOO=1"), conf(), cni.INVALID_ENV),
    (env(CNI_NETNS="/nonexistent/ns"), conf(), cni.UNKNOWN_CONTAINER),
    (env(), conf(mtu="big"), cni.INVALID_CONFIG),
    (env(), conf(runtimeConfig={"ips": ["198.18.0.1", "198.18.0.2"]}), cni.INVALID_CONFIG),
    (env("CHECK"), conf(), cni.INVALID_CONFIG),          # CHECK without prevResult
    (env("BOGUS"), conf(), cni.INVALID_ENV),
])
def test_bad_requests_get_the_spec_error_json(environ, stdin, code):
    status, out = cni.run(environ, stdin)
    assert status == 1 and out["code"] == code and out["msg"] != cni.LAST_RESORT
    assert FakeDaemon.calls == []


def test_a_malformed_previous_result_is_refused():
    status, out = cni.run(env(), conf(prevResult={"ips": "x"}))
    assert status == 1 and out["code"] == cni.INVALID_CONFIG and "prevResult.ips" in out["msg"]


@pytest.mark.parametrize("error, code", [
    (ClientError("no free address", 507, "exhausted"), cni.EXHAUSTED),
    (ClientError("taken", 409, "unavailable"), cni.UNAVAILABLE),
    (ClientError("busy", 503, "busy"), cni.TRY_AGAIN),
    (ClientError("not answering"), cni.TRY_AGAIN),
    (ClientError("refused", 400), cni.REFUSED),
])
def test_daemon_errors_map_to_cni_codes_by_kind(error, code):
    FakeDaemon.error = error
    status, out = cni.run(env(), conf())
    assert status == 1 and out["code"] == code


def test_version_needs_no_config():
    status, out = cni.run(env("VERSION"), "")
    assert status == 0 and out["supportedVersions"][-1] == cni.LATEST


def test_check_compares_the_previous_result():
    prev = {"interfaces": [{"name": "eth0", "sandbox": "/proc/self/ns/net", "mac": ATTACHED["mac"]}],
            "ips": [{"address": ATTACHED["ip"]}]}
    assert cni.run(env("CHECK"), conf(prevResult=prev)) == (0, None)
    prev["ips"] = [{"address": "198.18.0.77/16"}]
    status, out = cni.run(env("CHECK"), conf(prevResult=prev))
    assert status == 1 and out["code"] == cni.CHECK_FAILED


def test_stdin_that_is_not_utf8_or_a_network_name_off_the_spec_is_refused():
    bad_utf8 = conf().encode().replace(b'"pods"', b'"po\xffds"')
    assert cni.run(env(), bad_utf8)[1]["code"] == 6
    assert cni.run(env(), conf().encode())[0] == 0                  # bytes that are UTF-8: fine
    for name in ("-pods", "po ds", "pöds", "", "a/b", 5):
        code, out = cni.run(env(), conf(name=name))
        assert (code, out["code"]) == (1, 7), name
        assert "network name" in out["msg"]
    assert FakeDaemon.calls == [FakeDaemon.calls[0]]                # only the good ADD reached it


@pytest.mark.parametrize("code, cni_code", [("UNAVAILABLE", 11), ("DEADLINE_EXCEEDED", 11),
                                            ("PERMISSION_DENIED", 100)])
def test_an_etcd_failure_a_retry_can_cure_is_code_11(code, cni_code, daemon):
    """A leader change while a block is claimed reaches the plugin as
    'try again later'; what etcd refuses for good stays 100."""
    import asyncio

    import grpc

    from vswitch.etcd import Etcd
    from vswitch.httpd import http_status

    async def failing(request, timeout):
        raise grpc.aio.AioRpcError(getattr(grpc.StatusCode, code), grpc.aio.Metadata(),
                                   grpc.aio.Metadata(), details="etcdserver: leader changed")
    etcd = Etcd(["http://192.0.2.250:2379"])
    etcd.channel = object()
    with pytest.raises(Exception) as failure:
        asyncio.run(etcd.call(failing, None))
    status = http_status(failure.value)
    assert status == (503 if cni_code == 11 else 502) and code in str(failure.value)
    daemon.error = ClientError(str(failure.value), status, failure.value.kind)
    out = cni.run(env(), conf())[1]
    assert out["code"] == cni_code and "leader changed" in out["msg"]

"""The control API's HTTP layer over an in-memory stream: routing, request
limits, and the project's errors as HTTP statuses (httpd.HTTP_STATUS)."""

from __future__ import annotations

import asyncio
import json

import pytest

from vswitch import errors
from vswitch.api import Api
from vswitch.httpd import MAX_HEAD, http_status


class FakeSwitch:
    """Just what the routes below touch."""
    ports: dict = {}
    ipam = None
    state = type("NoState", (), {"run": None})()

    def __init__(self, error: Exception | None = None):
        self.error = error

    def port(self, name):
        raise self.error or errors.NotFound(f"no port {name!r}")

    async def remove_port(self, name):
        raise self.error


class Writer:
    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data

    async def drain(self):
        pass

    def close(self):
        pass


def request(raw: bytes, switch=None) -> tuple[int, dict]:
    async def go():
        api = Api(switch or FakeSwitch())
        reader = asyncio.StreamReader(limit=MAX_HEAD)
        reader.feed_data(raw)
        reader.feed_eof()
        writer = Writer()
        await api.handle(reader, writer)
        return writer.data
    head, _, body = asyncio.run(go()).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("raw, status", [
    (b"GET /v1/nothing HTTP/1.1\r\n\r\n", 404),
    (b"GET /v2/ports HTTP/1.1\r\n\r\n", 404),
    (b"PUT /v1/ports HTTP/1.1\r\n\r\n", 405),
    (b"GET /v1/ports HTTP/1.1\r\n\r\n", 200),
    (b"POST /v1/ports HTTP/1.1\r\nContent-Length: 5\r\n\r\n{bad}", 400),
    (b"GET /v1/ports HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HEAD + b"\r\n\r\n", 431),
], ids=["unknown", "not-v1", "method", "ok", "bad-json", "head-too-large"])
def test_routing_and_request_limits(raw, status):
    assert request(raw)[0] == status


def test_a_port_name_is_unquoted_and_a_missing_one_is_404():
    status, body = request(b"GET /v1/ports/p%20q HTTP/1.1\r\n\r\n")
    assert status == 404 and body["error"] == "no port 'p q'"


@pytest.mark.parametrize("error, status", [
    (errors.InvalidRequest("x"), 400), (errors.NotFound("x"), 404),
    (errors.NamespaceGone("x"), 404), (errors.Conflict("x"), 409),
    (errors.CheckFailed("x"), 409), (errors.ReloadRefused("x"), 422),
    (errors.DeviceError("x"), 500), (errors.Unsupported("x"), 501),
    (errors.Busy("x"), 503), (errors.Exhausted("x"), 507), (errors.VswitchError("x"), 400),
])
def test_each_error_class_has_its_status(error, status):
    assert http_status(error) == status


def test_errors_reach_the_client_with_their_kind():
    switch = FakeSwitch(errors.Exhausted("no free address", kind="exhausted"))
    status, body = request(b"DELETE /v1/ports/p HTTP/1.1\r\n\r\n", switch)
    assert (status, body) == (507, {"error": "no free address", "kind": "exhausted"})


def test_a_bug_is_a_500_and_the_api_goes_on():
    status, body = request(b"DELETE /v1/ports/p HTTP/1.1\r\n\r\n", FakeSwitch(ZeroDivisionError()))
    assert status == 500 and body["error"].startswith("internal error")
    assert request(b"GET /v1/ports HTTP/1.1\r\n\r\n")[0] == 200


class FakeCluster:
    """Records what the cluster routes were asked."""

    def __init__(self):
        self.created: list = []
        self.admin = self           # (the admin verbs, here its own)

    async def create_network(self, **fields):
        self.created.append(fields)
        return {"name": fields["name"]}

    def node_list(self):
        return [{"name": "node1"}]


@pytest.mark.parametrize("raw", [b"GET /v1/cluster HTTP/1.1\r\n\r\n",
                                 b"GET /v1/nodes HTTP/1.1\r\n\r\n",
                                 b"GET /v1/ipam/blocks HTTP/1.1\r\n\r\n",
                                 b"DELETE /v1/networks/blue HTTP/1.1\r\n\r\n"])
def test_cluster_verbs_on_a_static_node_are_a_clear_409(raw):
    switch = FakeSwitch()
    switch.cluster = None
    status, body = request(raw, switch)
    assert status == 409 and "static mode" in body["error"]


def post(path: str, body) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


def test_network_create_takes_known_fields_only():
    switch = FakeSwitch()
    switch.cluster = FakeCluster()
    ok = {"name": "blue", "vni": 7, "subnet": "198.18.0.0/16", "block_size": 26}
    assert request(post("/v1/networks", ok), switch) == (200, {"name": "blue"})
    assert switch.cluster.created == [ok]
    for bad, word in (({**ok, "colour": "red"}, "colour"), ({"name": "x"}, "vni"), ([1], "object")):
        status, body = request(post("/v1/networks", bad), switch)
        assert status == 400 and word in body["error"], bad
    assert len(switch.cluster.created) == 1
    assert request(b"GET /v1/nodes HTTP/1.1\r\n\r\n", switch) == (200, [{"name": "node1"}])


def test_status_text_shows_the_warnings_its_json_carries():
    from vswitch.ctl import show_status
    status = {"node": "n", "mode": "bridge", "version": "0", "uptime": 1.0, "ports": 0,
              "networks": ["blue"], "mtu": {"blue": {"mtu": 1500, "from": "config"}},
              "fdb_entries": 0, "aging_time": 300.0, "vtep": None, "peers": 0, "cluster": None,
              "masquerade": {"networks": ["blue"], "error": None,
                             "warnings": ["net.ipv4.conf.eth0.forwarding is 0",
                                          "net.ipv4.conf.all.send_redirects is 1"]}}
    text = show_status(status)
    assert "WARNING: net.ipv4.conf.eth0.forwarding is 0" in text
    assert "WARNING: net.ipv4.conf.all.send_redirects is 1" in text
    status["masquerade"] = {"networks": [], "error": None, "warnings": []}
    assert "WARNING" not in show_status(status)

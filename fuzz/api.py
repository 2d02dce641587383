"""Control API requests: the HTTP head, body and routing, as a local
client sends them."""

import asyncio

from vswitch.api import Api, _string_fields
from vswitch.httpd import MAX_HEAD, ApiError

api: Api
loop: asyncio.AbstractEventLoop


def setup():
    global api, loop
    state = type("NoState", (), {"run": None})()
    api = Api(switch=type("NoSwitch", (), {"ipam": None, "state": state})())
    loop = asyncio.new_event_loop()


async def parse(data: bytes):
    reader = asyncio.StreamReader(limit=MAX_HEAD)
    reader.feed_data(data)
    reader.feed_eof()
    try:
        method, path, query, body = await api._read_request(reader)
        api._route(method, path)
        _string_fields(body, ("name",), ("ifname", "network", "ip", "mac"))
    except (ApiError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass


def one_input(data: bytes):
    loop.run_until_complete(parse(data))


def seeds() -> list[bytes]:
    body = b'{"name": "p", "netns": "x", "ip": "198.18.0.5/16"}'
    return [b"GET /v1/status HTTP/1.1\r\n\r\n",
            b"POST /v1/ports HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
            b"DELETE /v1/ports/p%20q?network=blue HTTP/1.1\r\nHost: x\r\n\r\n"]

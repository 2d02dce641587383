"""A small client for the daemon's control API (HTTP + JSON on a Unix
socket): a method per verb of verbs.VERBS. Shared by vswitchctl and the CNI
plugin; it imports nothing of the daemon."""

from __future__ import annotations

import functools
import http.client
import json
import socket
from typing import Any, Callable
from urllib.parse import urlencode

from .protocol import CHUNK_LENGTH, DEFAULT_SOCKET
from .verbs import BY_NAME


class ClientError(Exception):
    def __init__(self, message: str, status: int | None = None, kind: str | None = None):
        super().__init__(message)
        self.status = status      # the HTTP status, None when the daemon did not answer
        self.kind = kind          # the daemon's word for the failure, if it gave one


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def _read_chunk(resp) -> bytes | None:
    """One length-prefixed chunk of a stream; None at its end."""
    head = resp.read(CHUNK_LENGTH.size)
    if len(head) < CHUNK_LENGTH.size:
        return None
    return resp.read(CHUNK_LENGTH.unpack(head)[0])


class Client:
    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 30.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, query: dict | None = None):
        """The decoded JSON answer; ClientError on any failure."""
        url = "/v1/" + path
        query = {k: v for k, v in (query or {}).items() if v is not None}
        if query:
            url += "?" + urlencode(query)
        conn = _UnixConnection(self.socket_path, self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload else {}
            conn.request(method, url, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (FileNotFoundError, ConnectionRefusedError):
            raise ClientError(f"vswitchd is not running (no answer on {self.socket_path})") from None
        except OSError as e:
            raise ClientError(f"talking to vswitchd on {self.socket_path}: {e}") from None
        finally:
            conn.close()
        try:
            result = json.loads(data)
        except ValueError:
            raise ClientError(f"vswitchd sent a malformed answer (HTTP {resp.status})", resp.status) from None
        if resp.status >= 400:
            raise ClientError(result.get("error", f"HTTP {resp.status}"), resp.status,
                              result.get("kind"))
        return result

    def capture(self, **options):
        """Yield (metadata, frame bytes) as the daemon streams them."""
        conn = _UnixConnection(self.socket_path, None)
        path, _, fields = BY_NAME["capture"].request((), options)
        try:
            conn.request("POST", "/v1/" + path, body=json.dumps(fields).encode(),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                data = resp.read()
                try:
                    message = json.loads(data).get("error", f"HTTP {resp.status}")
                except ValueError:
                    message = f"HTTP {resp.status}"
                raise ClientError(message, resp.status)
            while True:
                meta = _read_chunk(resp)
                if meta is None:
                    return
                frame = _read_chunk(resp)
                if frame is None:
                    return
                yield json.loads(meta), frame
        except (FileNotFoundError, ConnectionRefusedError):
            raise ClientError(f"vswitchd is not running (no answer on {self.socket_path})") from None
        except OSError as e:
            raise ClientError(f"talking to vswitchd on {self.socket_path}: {e}") from None
        finally:
            conn.close()

    # One method per verb (verbs.VERBS): positional arguments as the verb
    # declares them, then keywords; None is left out.
    def call(self, name: str, *args, **keywords):
        path, query, body = BY_NAME[name].request(args, keywords)
        return self.request(BY_NAME[name].method, path, body, query)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in BY_NAME:
            raise AttributeError(name)
        return functools.partial(self.call, name)

    def trace(self, port, frame: bytes):
        return self.call("trace", port, frame.hex())

"""HTTP/1.1 + JSON on a Unix socket, one request per connection: reading a
request within limits (size, time, connections at once), routing it to a
handler, and answering JSON, an error ({"error": message, "kind": ...}, the
project's errors as HTTP statuses) or a stream. Beneath the API's verbs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import (
    Busy,
    Conflict,
    DeviceError,
    Exhausted,
    InvalidRequest,
    NotFound,
    Refused,
    ReloadRefused,
    Unsupported,
    VswitchError,
)

log = logging.getLogger("vswitch.api")

MAX_BODY = 1 << 20
MAX_HEAD = 16 << 10          # request line and headers
READ_TIMEOUT = 10.0          # seconds a client may take to send its whole request
MAX_CONNECTIONS = 64         # at once; more are answered 503 at once and closed


# The project's errors as HTTP statuses: the first class in this order that
# an error is an instance of decides.
HTTP_STATUS = ((InvalidRequest, 400), (NotFound, 404), (Conflict, 409), (ReloadRefused, 422),
               (Unsupported, 501), (DeviceError, 500), (Refused, 502), (Busy, 503),
               (Exhausted, 507),
               (VswitchError, 400))


def http_status(error: VswitchError) -> int:
    return next(status for cls, status in HTTP_STATUS if isinstance(error, cls))


class ApiError(Exception):
    """A request the HTTP layer refuses (malformed, too large, too slow)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Stream:
    """A streamed answer: `records` yields byte chunks until it ends (or the
    client goes away); `close` runs in any case."""

    def __init__(self, records, close):
        self.records, self.close = records, close


class HttpServer:
    """Serves `routes`: (method, "path" or "path/*") -> handler(query, body, arg)."""

    def __init__(self):
        self.routes: dict = {}
        self.connections = 0


    def _route(self, method: str, path: str):
        parts = path.strip("/").split("/")
        if parts[0] != "v1" or len(parts) < 2:
            raise ApiError(f"no such path {path!r}", 404)
        rest = "/".join(parts[1:])
        if (method, rest) in self.routes:
            return self.routes[(method, rest)], None
        if len(parts) == 3 and (method, f"{parts[1]}/*") in self.routes:
            return self.routes[(method, f"{parts[1]}/*")], unquote(parts[2])
        if any(r == rest or r == f"{parts[1]}/*" for _, r in self.routes):
            raise ApiError(f"method {method} not allowed on {path}", 405)
        raise ApiError(f"no such path {path!r}", 404)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections += 1
        try:
            if self.connections > MAX_CONNECTIONS:
                await self._answer(writer, 503, {"error": f"{MAX_CONNECTIONS} requests are under "
                                                 "way already; try again"})
                return
            await self._handle(reader, writer)
        finally:
            self.connections -= 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        status, result = 200, None
        try:
            try:
                request = await asyncio.wait_for(self._read_request(reader), READ_TIMEOUT)
            except asyncio.TimeoutError:
                raise ApiError(f"request not received within {READ_TIMEOUT:g} s", 408) from None
            except asyncio.LimitOverrunError:
                raise ApiError("request head too large", 431) from None
            method, path, query, body = request
            handler, arg = self._route(method, path)
            result = await handler(query, body, arg)
            if isinstance(result, Stream):
                await self._stream(reader, writer, result)
                return
        except ApiError as e:
            status, result = e.status, {"error": str(e)}
        except VswitchError as e:
            status, result = http_status(e), {"error": str(e)}
            if e.kind:
                result["kind"] = e.kind
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except Exception as e:      # a bug must not take the daemon down
            log.exception("request failed")
            status, result = 500, {"error": f"internal error: {e}"}
        await self._answer(writer, status, result)

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, result):
        payload = json.dumps(result).encode() + b"\n"
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n").encode()
        try:
            writer.write(head + payload)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _stream(self, reader, writer, stream: Stream):
        """Send a Stream until it ends or the client hangs up."""
        async def hangup():
            # Whatever the client sends now is read and dropped (never kept);
            # EOF means it is gone.
            while await reader.read(65536):
                pass

        watcher = asyncio.ensure_future(hangup())
        records = stream.records.__aiter__()
        try:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Connection: close\r\n\r\n")
            while True:
                following = asyncio.ensure_future(records.__anext__())
                await asyncio.wait({following, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    break
                try:
                    chunk = following.result()
                except StopAsyncIteration:
                    break
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            watcher.cancel()
            stream.close()
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ")
        except ValueError:
            raise ApiError("malformed request line") from None
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise ApiError("bad Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise ApiError("request body too large", 413)
        body = None
        if length:
            raw = await reader.readexactly(length)
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise ApiError(f"body is not valid JSON: {e}") from None
        try:
            if not target.startswith("/"):
                raise ValueError("not a path")
            url = urlsplit(target)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        except ValueError as e:
            raise ApiError(f"malformed request target: {e}") from None
        return method, url.path, query, body


def claim_socket_path(path: str):
    """Remove a stale socket file; refuse if a daemon answers on it."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        raise RuntimeError(f"another vswitchd is listening on {path}")
    finally:
        probe.close()

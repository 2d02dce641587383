"""The control API: HTTP/1.1 + JSON on a Unix socket, one request per
connection. Routes map to Switch methods; every failure is a JSON error
answer ({"error": message}) and never takes the daemon down."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from http import HTTPStatus
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs, unquote, urlsplit

from . import reporting
from .attachments import Attachments
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
from .protocol import ETH_HLEN, MAX_SNAPLEN, capture_chunks
from .switch import Switch

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger("vswitch.api")

MAX_BODY = 1 << 20
MAX_HEAD = 16 << 10          # request line and headers
CAPTURE_QUEUE = 4096         # records a capture client may lag behind before losing some
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


class Api:
    def __init__(self, switch: Switch, service=None):
        self.switch = switch
        self.service = service          # the daemon: reload and stop
        self.attachments = Attachments(switch)
        self.connections = 0
        self.routes = {
            ("GET", "status"): self.status,
            ("GET", "ports"): self.list_ports,
            ("POST", "ports"): self.add_port,
            ("GET", "ports/*"): self.show_port,
            ("POST", "ports/*"): self.set_port,
            ("DELETE", "ports/*"): self.del_port,
            ("GET", "fdb"): self.show_fdb,
            ("POST", "fdb"): self.add_fdb,
            ("DELETE", "fdb/*"): self.del_fdb,
            ("POST", "fdb/flush"): self.flush_fdb,
            ("GET", "peers"): self.list_peers,
            ("POST", "peers"): self.add_peer,
            ("GET", "peers/*"): self.show_peer,
            ("DELETE", "peers/*"): self.del_peer,
            ("GET", "stats"): self.stats,
            ("POST", "attachments"): self.attach,
            ("POST", "attachments/delete"): self.detach,
            ("POST", "attachments/check"): self.check_attachment,
            ("GET", "ipam"): self.show_ipam,
            ("POST", "ipam/gc"): self.ipam_gc,
            ("POST", "capture"): self.capture,
            ("POST", "trace"): self.trace,
            ("POST", "reload"): self.reload,
            ("GET", "cluster"): self.cluster_status,
            ("GET", "networks"): self.list_networks,
            ("POST", "networks"): self.create_network,
            ("DELETE", "networks/*"): self.delete_network,
            ("GET", "nodes"): self.list_nodes,
            ("DELETE", "nodes/*"): self.remove_node,
            ("GET", "ipam/blocks"): self.ipam_blocks,
            ("POST", "stop"): self.stop,
            ("POST", "policies"): self.apply_policies,
            ("GET", "policies"): self.list_policies,
            ("GET", "policies/*"): self.show_policy,
            ("DELETE", "policies/*"): self.delete_policy,
            ("POST", "labels/port"): self.label_port,
            ("POST", "labels/namespace"): self.label_namespace,
            ("GET", "namespaces"): self.list_namespaces,
            ("GET", "conntrack"): self.show_conntrack,
            ("POST", "conntrack/flush"): self.flush_conntrack,
        }

    # ------------------------------------------------------------- handlers

    async def status(self, query, body, arg):
        return reporting.status(self.switch)

    async def list_ports(self, query, body, arg):
        return [reporting.port_info(self.switch, p) for p in self.switch.ports.values()]

    async def add_port(self, query, body, arg):
        security = body.pop("port_security", None) if isinstance(body, dict) else None
        pod = body.pop("pod", None) if isinstance(body, dict) else None
        if security is not None and not isinstance(security, bool):
            raise ApiError("field 'port_security' must be true or false")
        fields = _string_fields(body, required=("name", "netns"),
                                optional=("ifname", "network", "ip", "mac"))
        port = await self.switch.add_port(**fields, port_security=security, pod=pod)
        return reporting.port_info(self.switch, port)

    async def show_port(self, query, body, name):
        return reporting.port_info(self.switch, self.switch.port(name))

    async def set_port(self, query, body, name):
        if not isinstance(body, dict):
            raise ApiError("expected a JSON object of rates")
        return reporting.port_info(self.switch, await self.switch.set_rates(name, body))

    async def del_port(self, query, body, name):
        await self.switch.remove_port(name)
        return {"deleted": name}

    async def show_fdb(self, query, body, arg):
        return reporting.fdb(self.switch, query.get("network"))

    async def add_fdb(self, query, body, arg):
        return self.switch.overlay.fdb_add(**_string_fields(body, ("mac", "peer"), ("network",)))

    async def del_fdb(self, query, body, mac):
        self.switch.fdb_del(mac, query.get("network"))
        return {"deleted": mac}

    async def list_peers(self, query, body, arg):
        return self.switch.overlay.peers()

    async def add_peer(self, query, body, arg):
        return self.switch.overlay.add_peer(**_string_fields(body, ("ip",), ("network",)))

    async def show_peer(self, query, body, ip):
        return self.switch.overlay.peer(ip)

    async def del_peer(self, query, body, ip):
        self.switch.overlay.del_peer(ip)
        return {"deleted": ip}

    async def flush_fdb(self, query, body, arg):
        network = body.get("network") if isinstance(body, dict) else None
        return {"flushed": self.switch.fdb_flush(network)}

    async def stats(self, query, body, arg):
        return reporting.stats(self.switch)

    async def attach(self, query, body, arg):
        mtu = body.pop("mtu", None) if isinstance(body, dict) else None
        rates = body.pop("rates", None) if isinstance(body, dict) else None
        pod = body.pop("pod", None) if isinstance(body, dict) else None
        if rates is not None and not isinstance(rates, dict):
            raise ApiError("field 'rates' must be an object")
        if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool)):
            raise ApiError("field 'mtu' must be an integer")
        return await self.attachments.add(**_string_fields(
            body, ("container_id", "ifname", "netns"), ("network", "cni_network", "ip", "mac")),
            mtu=mtu, rates=rates, pod=pod)

    async def detach(self, query, body, arg):
        return await self.attachments.delete(**_string_fields(body, ("container_id", "ifname"), ()))

    async def check_attachment(self, query, body, arg):
        return await self.attachments.check(
            **_string_fields(body, ("container_id", "ifname", "netns"), ()))

    # ------------------------------------------------------------- policy

    async def apply_policies(self, query, body, arg):
        if not isinstance(body, dict) or not isinstance(body.get("manifests"), list):
            raise ApiError("expected {\"manifests\": [NetworkPolicy objects]}")
        return await self.switch.policy.apply(body["manifests"])

    async def list_policies(self, query, body, arg):
        return self.switch.policy.summaries()

    async def show_policy(self, query, body, key):
        return self.switch.policy.show(key)

    async def delete_policy(self, query, body, key):
        return await self.switch.policy.delete(key)

    @staticmethod
    def _label_changes(body, who: str) -> tuple[str, list[str]]:
        if not isinstance(body, dict) or not isinstance(body.get(who), str) or \
                not isinstance(body.get("labels"), list) or not body["labels"]:
            raise ApiError(f"expected {{\"{who}\": NAME, \"labels\": [\"key=value\" or "
                           "\"key-\", ...]}")
        return body[who], body["labels"]

    async def label_port(self, query, body, arg):
        port = await self.switch.label_port(*self._label_changes(body, "port"))
        return reporting.port_info(self.switch, port)

    async def label_namespace(self, query, body, arg):
        return await self.switch.policy.label_namespace(*self._label_changes(body, "namespace"))

    async def list_namespaces(self, query, body, arg):
        policy = self.switch.policy
        names = set(policy.namespaces) | {p.namespace for p in policy.pods()}
        return [{"namespace": n, "labels": policy.namespace_labels(n)} for n in sorted(names)]

    async def show_conntrack(self, query, body, arg):
        limit = query.get("limit", "1000")
        if not limit.isdigit():
            raise ApiError("limit must be a number (0: all)")
        return reporting.conntrack(self.switch, query.get("port"), int(limit))

    async def flush_conntrack(self, query, body, arg):
        return {"flushed": self.switch.dataplane.conntrack_flush()}

    # ------------------------------------------------------------- cluster

    @property
    def cluster(self) -> Cluster:
        if self.switch.cluster is None:
            raise Conflict("this node runs in static mode: networks, nodes and blocks are "
                           "cluster-mode verbs (see [cluster] in the README)")
        return cast("Cluster", self.switch.cluster)

    async def cluster_status(self, query, body, arg):
        return self.cluster.status()

    async def list_networks(self, query, body, arg):
        return self.cluster.admin.list_networks()

    async def create_network(self, query, body, arg):
        if not isinstance(body, dict):
            raise ApiError("expected a JSON object")
        unknown = set(body) - {"name", "vni", "subnet", "block_size", "mtu", "gateway",
                               "masquerade", "subnet6", "block_size6"}
        if unknown:
            raise ApiError(f"unknown field {sorted(unknown)[0]!r}")
        for key in ("name", "vni"):
            if key not in body:
                raise ApiError(f"field {key!r} is required")
        if body.get("subnet") is None and body.get("subnet6") is None:
            raise ApiError("field 'subnet' (IPv4) or 'subnet6' (IPv6 only) is required")
        return await self.cluster.admin.create_network(**body)

    async def delete_network(self, query, body, name):
        return await self.cluster.admin.delete_network(name)

    async def list_nodes(self, query, body, arg):
        return self.cluster.admin.node_list()

    async def remove_node(self, query, body, name):
        return await self.cluster.admin.remove_node(name)

    async def ipam_blocks(self, query, body, arg):
        return self.cluster.admin.block_list()

    async def show_ipam(self, query, body, arg):
        return await self.attachments.show(query.get("network"))

    async def ipam_gc(self, query, body, arg):
        body = {} if body is None else body
        valid = body.pop("valid", None) if isinstance(body, dict) else None
        if valid is not None and not (isinstance(valid, list) and all(
                isinstance(v, dict) and isinstance(v.get("containerID"), str)
                and isinstance(v.get("ifname"), str) for v in valid)):
            raise ApiError("field 'valid' must be a list of {containerID, ifname} objects")
        fields = _string_fields(body, (), ("cni_network",))
        if valid is not None and "cni_network" not in fields:
            raise ApiError("field 'cni_network' is required with 'valid'")
        return await self.attachments.gc(fields.get("cni_network"), valid)

    async def capture(self, query, body, arg):
        """Stream matching frames: each a 4-byte length and JSON metadata,
        then a 4-byte length and the frame's bytes."""
        body = body if isinstance(body, dict) else {}
        count, duration = body.pop("count", None), body.pop("duration", None)
        snaplen, points = body.pop("snaplen", MAX_SNAPLEN), body.pop("point", None)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ApiError("field 'count' must be a positive integer")
        if duration is not None and (not isinstance(duration, (int, float)) or duration <= 0):
            raise ApiError("field 'duration' must be a positive number of seconds")
        if not isinstance(snaplen, int) or not ETH_HLEN <= snaplen <= MAX_SNAPLEN:
            raise ApiError(f"field 'snaplen' must be {ETH_HLEN}..{MAX_SNAPLEN}")
        if points is not None and not isinstance(points, (str, list)):
            raise ApiError("field 'point' must be a point name or a list of them")
        fields = _string_fields(body, (), ("port", "filter"))
        queue: asyncio.Queue = asyncio.Queue(CAPTURE_QUEUE)
        session_drops = [0]

        def consume(record):
            try:
                queue.put_nowait(record)
            except asyncio.QueueFull:
                session_drops[0] += 1
                self.switch.captures.consumer_dropped += 1

        captures = self.switch.captures
        session = await captures.open(consume, points, fields.get("port"), fields.get("filter"),
                                      snaplen)

        async def records():
            loop = asyncio.get_running_loop()
            end = loop.time() + duration if duration else None
            sent = 0
            while count is None or sent < count:
                timeout = None if end is None else end - loop.time()
                if timeout is not None and timeout <= 0:
                    break
                try:
                    record = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                meta = json.dumps(record.meta()).encode()
                yield capture_chunks(meta, record.data)
                sent += 1

        return Stream(records(), lambda: captures.close(session))

    async def trace(self, query, body, arg):
        fields = _string_fields(body, ("port", "frame"), ())
        try:
            frame = bytes.fromhex(fields["frame"])
        except ValueError:
            raise ApiError("field 'frame' must be hex") from None
        return reporting.trace(self.switch, fields["port"], frame)

    async def reload(self, query, body, arg):
        try:
            return await self.service.reload()
        except ReloadRefused as e:
            raise ApiError(f"reload refused, running config kept: {e}", 422) from None

    async def stop(self, query, body, arg):
        remove = body.get("remove_ports", False) if isinstance(body, dict) else False
        if not isinstance(remove, bool):
            raise ApiError("field 'remove_ports' must be true or false")
        # Answer first; the daemon stops once this request is done.
        asyncio.get_running_loop().call_later(0.05, self.service.stop, remove)
        return {"stopping": True, "remove_ports": remove}

    # ------------------------------------------------------------- HTTP

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


def _string_fields(body, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
    """The request's fields, all strings; required ones present, no others."""
    if not isinstance(body, dict):
        raise ApiError("expected a JSON object")
    unknown = set(body) - set(required) - set(optional)
    if unknown:
        raise ApiError(f"unknown field {sorted(unknown)[0]!r}")
    for field in required:
        if not isinstance(body.get(field), str):
            raise ApiError(f"field {field!r} is required (a string)")
    for field in optional:
        if body.get(field) is not None and not isinstance(body[field], str):
            raise ApiError(f"field {field!r} must be a string")
    return {k: v for k, v in body.items() if v is not None}


def _claim_socket_path(path: str):
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


async def start(path: str, switch: Switch, service=None) -> asyncio.AbstractServer:
    """Listen on `path`, owned by root with mode 0600."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    _claim_socket_path(path)
    old = os.umask(0o177)
    try:
        return await asyncio.start_unix_server(Api(switch, service).handle, path=path,
                                               limit=MAX_HEAD)
    finally:
        os.umask(old)

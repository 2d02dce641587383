"""The control API's handlers, one per verb of verbs.VERBS (which declares
its route) and named as it: each calls the Switch's methods (or the
cluster's, the policy engine's, the daemon's); served by httpd.py, every
failure is a JSON error answer and never takes the daemon down."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import TYPE_CHECKING, cast

from . import reporting
from .attachments import Attachments
from .errors import (
    Conflict,
    ReloadRefused,
)
from .httpd import MAX_HEAD, ApiError, HttpServer, Stream, claim_socket_path
from .protocol import ETH_HLEN, MAX_SNAPLEN, capture_chunks
from .switch import Switch
from .verbs import VERBS

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger("vswitch.api")

CAPTURE_QUEUE = 4096         # records a capture client may lag behind before losing some


class Api(HttpServer):
    def __init__(self, switch: Switch, service=None):
        super().__init__()
        self.switch = switch
        self.service = service          # the daemon: reload and stop
        self.attachments = Attachments(switch)
        self.routes = {verb.route: getattr(self, verb.name) for verb in VERBS}

    # ------------------------------------------------------------- handlers

    async def status(self, query, body, arg):
        return reporting.status(self.switch)

    async def ports(self, query, body, arg):
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

    async def port(self, query, body, name):
        return reporting.port_info(self.switch, self.switch.port(name))

    async def set_port(self, query, body, name):
        if not isinstance(body, dict):
            raise ApiError("expected a JSON object of rates")
        return reporting.port_info(self.switch, await self.switch.set_rates(name, body))

    async def del_port(self, query, body, name):
        await self.switch.remove_port(name)
        return {"deleted": name}

    async def fdb(self, query, body, arg):
        return reporting.fdb(self.switch, query.get("network"))

    async def fdb_add(self, query, body, arg):
        return self.switch.overlay.fdb_add(**_string_fields(body, ("mac", "peer"), ("network",)))

    async def fdb_del(self, query, body, mac):
        self.switch.fdb_del(mac, query.get("network"))
        return {"deleted": mac}

    async def peers(self, query, body, arg):
        return self.switch.overlay.peers()

    async def add_peer(self, query, body, arg):
        return self.switch.overlay.add_peer(**_string_fields(body, ("ip",), ("network",)))

    async def peer(self, query, body, ip):
        return self.switch.overlay.peer(ip)

    async def del_peer(self, query, body, ip):
        self.switch.overlay.del_peer(ip)
        return {"deleted": ip}

    async def fdb_flush(self, query, body, arg):
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

    async def policies(self, query, body, arg):
        return self.switch.policy.summaries()

    async def policy(self, query, body, key):
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

    async def namespaces(self, query, body, arg):
        policy = self.switch.policy
        names = set(policy.namespaces) | {p.namespace for p in policy.pods()}
        return [{"namespace": n, "labels": policy.namespace_labels(n)} for n in sorted(names)]

    async def conntrack(self, query, body, arg):
        limit = query.get("limit", "1000")
        if not limit.isdigit():
            raise ApiError("limit must be a number (0: all)")
        return reporting.conntrack(self.switch, query.get("port"), int(limit))

    async def conntrack_flush(self, query, body, arg):
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

    async def networks(self, query, body, arg):
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

    async def nodes(self, query, body, arg):
        return self.cluster.admin.node_list()

    async def remove_node(self, query, body, name):
        return await self.cluster.admin.remove_node(name)

    async def ipam_blocks(self, query, body, arg):
        return self.cluster.admin.block_list()

    async def ipam(self, query, body, arg):
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


async def start(path: str, switch: Switch, service=None) -> asyncio.AbstractServer:
    """Listen on `path`, owned by root with mode 0600."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    claim_socket_path(path)
    old = os.umask(0o177)
    try:
        return await asyncio.start_unix_server(Api(switch, service).handle, path=path,
                                               limit=MAX_HEAD)
    finally:
        os.umask(old)

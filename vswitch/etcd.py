"""A small asyncio client for etcd's v3 API: what the cluster module needs
(range, put, transactions, leases, one prefix watch), over gRPC
with the message types and stubs that aetcd generates. aetcd's own client
speaks to one endpoint without TLS; this one takes the list of endpoints
(moving to the next when one fails) and client certificates.

Every call has a deadline: a call that fails raises EtcdUnavailable, and
the caller (cluster.py) reconnects with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
from aetcd import rpc

from .errors import Busy, Refused
from .protocol import ErrorKind

log = logging.getLogger("vswitch.etcd")

CALL_TIMEOUT = 3.0          # seconds an ordinary call may take
PAGE = 2000                 # keys per listing request
# Room for a watch response or a page of big records (gRPC's default is 4 MiB).
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]
# How gRPC words a failed TLS handshake (a TLS 1.3 server's refusal of the
# client certificate arrives as a failure to unwrap the first record).
TLS_FAILURES = ("TSI_", "SSL", "ssl", "handshake", "certificate", "Unwrap failed")


class EtcdUnavailable(Busy):
    """etcd did not answer or failed a call (down, partitioned, a leader
    change, refused our certificate): a request that meets it may try again
    (CNI 11)."""

    def __init__(self, message: str):
        super().__init__(message, kind=ErrorKind.BUSY)


class EtcdRefused(Refused):
    """etcd refused a call for good (permissions, a bad request): a retry
    cannot cure it (CNI 100)."""

    def __init__(self, message: str):
        super().__init__(message, kind=ErrorKind.ETCD_REFUSED)


ETCD_FAILURES = (EtcdUnavailable, EtcdRefused)


# gRPC codes of calls etcd refused for good (the rest: it may answer next time).
FINAL_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
               grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION,
               grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNIMPLEMENTED}


def rpc_failure(e: grpc.aio.AioRpcError) -> EtcdUnavailable | EtcdRefused:
    """What a failed call means to the caller: try again, or give up."""
    failure = EtcdRefused if e.code() in FINAL_CODES else EtcdUnavailable
    return failure(f"etcd: {e.code().name}: {e.details()}")


class Compacted(Exception):
    """The watch's start revision was compacted away: list everything again."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


@dataclass(frozen=True)
class Event:
    key: str
    value: bytes | None     # None: deleted
    revision: int


def range_end(prefix: str) -> bytes:
    """The end of the key range that holds every key starting with prefix."""
    b = bytearray(prefix.encode())
    b[-1] += 1
    return bytes(b)


def _kv(kv) -> KeyValue:
    return KeyValue(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision, kv.lease)


class Txn:
    """A transaction under construction: compares, then what to do if they
    all hold (success) or not (failure)."""

    def __init__(self):
        self.compare: list = []
        self.success: list = []
        self.failure: list = []

    def _cmp(self, key: str, target: str, result: str, **value) -> "Txn":
        self.compare.append(rpc.Compare(key=key.encode(), target=getattr(rpc.Compare, target),
                                        result=getattr(rpc.Compare, result), **value))
        return self

    def absent(self, key: str) -> "Txn":
        return self._cmp(key, "VERSION", "EQUAL", version=0)

    def unchanged(self, key: str, mod_revision: int) -> "Txn":
        return self._cmp(key, "MOD", "EQUAL", mod_revision=mod_revision)

    def leased(self, key: str, lease: int) -> "Txn":
        return self._cmp(key, "LEASE", "EQUAL", lease=lease)

    @staticmethod
    def put(key: str, value: bytes, lease: int = 0):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=key.encode(), value=value, lease=lease))

    @staticmethod
    def delete(key: str, prefix: bool = False):
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
            key=key.encode(), range_end=range_end(key) if prefix else b""))

    @staticmethod
    def get(key: str):
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=key.encode()))


class Etcd:
    """A connection to an etcd cluster through one of its endpoints."""

    def __init__(self, endpoints: Sequence[str], ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None):
        self.endpoints = list(endpoints)
        self._credentials = None
        if ca_file or cert_file:
            def read(path):
                with open(path, "rb") as f:
                    return f.read()
            self._credentials = grpc.ssl_channel_credentials(
                read(ca_file) if ca_file else None,
                read(key_file) if key_file else None, read(cert_file) if cert_file else None)
        self._next = 0
        self.endpoint: str | None = None
        self.channel: grpc.aio.Channel | None = None

    async def connect(self, timeout: float = CALL_TIMEOUT):
        """Open a channel to the next endpoint that answers; EtcdUnavailable
        (naming each endpoint's failure) when none does."""
        await self.close()
        errors = []
        for _ in self.endpoints:
            url = self.endpoints[self._next % len(self.endpoints)]
            self._next += 1
            target = urlsplit(url).netloc
            channel = grpc.aio.secure_channel(target, self._credentials, CHANNEL_OPTIONS) \
                if self._credentials else grpc.aio.insecure_channel(target, CHANNEL_OPTIONS)
            self.channel, self.endpoint = channel, url
            self.kv = rpc.KVStub(channel)
            self.leases = rpc.LeaseStub(channel)
            self.watches = rpc.WatchStub(channel)
            try:
                # A real call, not channel_ready(): its failure says why (a
                # refused certificate, a closed port), where waiting would not.
                await asyncio.wait_for(self.call(self.kv.Range, rpc.RangeRequest(
                    key=b"\0", limit=1), timeout), timeout)
                return
            except (asyncio.TimeoutError, *ETCD_FAILURES) as e:
                why = str(e) if isinstance(e, ETCD_FAILURES) else "timed out"
                if self._credentials and any(m in why for m in TLS_FAILURES):
                    why = (f"TLS handshake failed: etcd refused this node's client certificate, "
                           f"or its own is not signed by cluster.ca_file ({why})")
                errors.append(f"{url}: {why}")
                self.channel = None
                await channel.close()
        raise EtcdUnavailable("; ".join(errors))

    async def close(self):
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    async def call(self, method, request, timeout: float = CALL_TIMEOUT):
        if self.channel is None:
            raise EtcdUnavailable("not connected")
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise rpc_failure(e) from None

    # ------------------------------------------------------------ key-value

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under prefix, and the store's revision they were read
        at: in pages (a cluster's state outgrows one gRPC message), every
        page read at the first one's revision, so the whole is consistent."""
        out: list[KeyValue] = []
        start, end, revision = prefix.encode(), range_end(prefix), 0
        while True:
            r = await self.call(self.kv.Range, rpc.RangeRequest(
                key=start, range_end=end, limit=PAGE, revision=revision))
            revision = revision or r.header.revision
            out += [_kv(kv) for kv in r.kvs]
            if not r.more:
                return out, revision
            start = r.kvs[-1].key + b"\0"

    async def get(self, key: str) -> KeyValue | None:
        r = await self.call(self.kv.Range, rpc.RangeRequest(key=key.encode()))
        return _kv(r.kvs[0]) if r.kvs else None

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        r = await self.call(self.kv.Put, rpc.PutRequest(key=key.encode(), value=value, lease=lease))
        return r.header.revision

    async def commit(self, txn: Txn):
        """Run a transaction; its response (.succeeded, .responses)."""
        return await self.call(self.kv.Txn, rpc.TxnRequest(
            compare=txn.compare, success=txn.success, failure=txn.failure))

    # --------------------------------------------------------------- leases

    async def grant(self, ttl: int) -> int:
        r = await self.call(self.leases.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl))
        return r.ID

    async def keepalive(self, lease: int) -> int:
        """Renew a lease once; its TTL now (0: it has expired)."""
        async def one():
            call = self.leases.LeaseKeepAlive()
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
            response = await call.read()
            call.cancel()
            return response.TTL
        try:
            return await asyncio.wait_for(one(), CALL_TIMEOUT)
        except asyncio.TimeoutError:
            raise EtcdUnavailable("lease keep-alive timed out") from None
        except grpc.aio.AioRpcError as e:
            raise rpc_failure(e) from None

    async def revoke(self, lease: int):
        await self.call(self.leases.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease))

    # ---------------------------------------------------------------- watch

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Event]]:
        """The changes under prefix from start_revision on, a batch (one
        etcd response, events in revision order) at a time. Compacted when
        the start revision is gone; EtcdUnavailable when the stream breaks."""
        call = self.watches.Watch()
        try:
            await call.write(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
                key=prefix.encode(), range_end=range_end(prefix), start_revision=start_revision)))
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    break
                if response.compact_revision:
                    raise Compacted(f"revision {start_revision} compacted "
                                    f"(now {response.compact_revision})")
                if response.canceled:
                    raise EtcdUnavailable(f"watch canceled: {response.cancel_reason}")
                if response.events:
                    yield [Event(e.kv.key.decode(), None if e.type == e.DELETE else e.kv.value,
                                 e.kv.mod_revision) for e in response.events]
            raise EtcdUnavailable("watch stream ended")
        except grpc.aio.AioRpcError as e:
            raise EtcdUnavailable(f"watch: {e.code().name}: {e.details()}") from None
        finally:
            call.cancel()

"""A small client for the daemon's control API (HTTP + JSON on a Unix
socket). Shared by vswitchctl and the CNI plugin; it imports
nothing of the daemon."""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote, urlencode

from .protocol import CHUNK_LENGTH, DEFAULT_SOCKET


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
        try:
            body = json.dumps({k: v for k, v in options.items() if v is not None}).encode()
            conn.request("POST", "/v1/capture", body=body,
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

    # Convenience wrappers, one per API route.
    def status(self):
        return self.request("GET", "status")

    def ports(self):
        return self.request("GET", "ports")

    def add_port(self, name, netns, **options):
        return self.request("POST", "ports", dict(name=name, netns=netns, **options))

    def port(self, name):
        return self.request("GET", "ports/" + quote(name, safe=""))

    def set_port(self, name, **rates):
        return self.request("POST", "ports/" + quote(name, safe=""),
                            {k: v for k, v in rates.items() if v is not None})

    def del_port(self, name):
        return self.request("DELETE", "ports/" + quote(name, safe=""))

    def fdb(self, network=None):
        return self.request("GET", "fdb", query={"network": network})

    def fdb_add(self, mac, peer, network=None):
        return self.request("POST", "fdb", {"mac": mac, "peer": peer, "network": network})

    def fdb_del(self, mac, network=None):
        return self.request("DELETE", "fdb/" + quote(mac, safe=""), query={"network": network})

    def peers(self):
        return self.request("GET", "peers")

    def add_peer(self, ip, network=None):
        return self.request("POST", "peers", {"ip": ip, "network": network})

    def peer(self, ip):
        return self.request("GET", "peers/" + quote(ip, safe=""))

    def del_peer(self, ip):
        return self.request("DELETE", "peers/" + quote(ip, safe=""))

    def fdb_flush(self, network=None):
        return self.request("POST", "fdb/flush", {"network": network})

    def stats(self):
        return self.request("GET", "stats")

    def attach(self, container_id, ifname, netns, **options):
        return self.request("POST", "attachments", dict(container_id=container_id, ifname=ifname,
                                                        netns=netns, **options))

    def detach(self, container_id, ifname):
        return self.request("POST", "attachments/delete",
                            {"container_id": container_id, "ifname": ifname})

    def check_attachment(self, container_id, ifname, netns):
        return self.request("POST", "attachments/check",
                            {"container_id": container_id, "ifname": ifname, "netns": netns})

    def ipam(self, network=None):
        return self.request("GET", "ipam", query={"network": network})

    def ipam_gc(self, cni_network=None, valid=None):
        body = {"cni_network": cni_network}
        if valid is not None:
            body["valid"] = valid
        return self.request("POST", "ipam/gc", body)

    def reload(self):
        return self.request("POST", "reload")

    def stop(self, remove_ports=False):
        return self.request("POST", "stop", {"remove_ports": remove_ports})

    def trace(self, port, frame: bytes):
        return self.request("POST", "trace", {"port": port, "frame": frame.hex()})

    def cluster_status(self):
        return self.request("GET", "cluster")

    def networks(self):
        return self.request("GET", "networks")

    def create_network(self, name, vni, subnet=None, block_size=None, mtu=None, gateway=None,
                       masquerade=None, subnet6=None, block_size6=None):
        body = {"name": name, "vni": vni}
        body.update({k: v for k, v in (("subnet", subnet), ("block_size", block_size), ("mtu", mtu),
                                       ("gateway", gateway), ("masquerade", masquerade),
                                       ("subnet6", subnet6), ("block_size6", block_size6))
                     if v is not None})
        return self.request("POST", "networks", body)

    def delete_network(self, name):
        return self.request("DELETE", "networks/" + quote(name, safe=""))

    def nodes(self):
        return self.request("GET", "nodes")

    def remove_node(self, name):
        return self.request("DELETE", "nodes/" + quote(name, safe=""))

    def ipam_blocks(self):
        return self.request("GET", "ipam/blocks")

    # NetworkPolicy
    def apply_policies(self, manifests: list):
        return self.request("POST", "policies", {"manifests": manifests})

    def policies(self):
        return self.request("GET", "policies")

    def policy(self, key):
        return self.request("GET", "policies/" + quote(key, safe=""))

    def delete_policy(self, key):
        return self.request("DELETE", "policies/" + quote(key, safe=""))

    def label_port(self, name, changes: list[str]):
        return self.request("POST", "labels/port", {"port": name, "labels": changes})

    def label_namespace(self, name, changes: list[str]):
        return self.request("POST", "labels/namespace", {"namespace": name, "labels": changes})

    def namespaces(self):
        return self.request("GET", "namespaces")

    def conntrack(self, port=None, limit=None):
        return self.request("GET", "conntrack", query={"port": port, "limit": limit})

    def conntrack_flush(self):
        return self.request("POST", "conntrack/flush", {})

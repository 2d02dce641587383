"""The control API's verbs, each declared once: its route (HTTP method and
path under /v1/), the client call's positional arguments and how the
arguments travel, and its words and help on vswitchctl's command line. The
daemon's API routes each to the handler of the same name (api.py), the
client has a method of that name (client.py), and vswitchctl a command
(ctl.py, which adds only the command's own options and how it prints the
answer). Imports nothing of the daemon: the CNI plugin and vswitchctl use
it too."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Verb:
    name: str                   # the client's method and the API's handler
    method: str                 # GET, POST or DELETE
    path: str                   # "{x}": the argument x, in the path
    params: tuple[str, ...] = ()    # the client call's positional arguments (then keywords)
    cli: str = ""               # vswitchctl's words ("" : none, an API-only verb)
    help: str = ""

    @property
    def route(self) -> tuple[str, str]:
        """(method, path pattern) as the API matches it: "*" for an argument."""
        parts = self.path.split("/")
        return self.method, "/".join("*" if p.startswith("{") else p for p in parts)

    def request(self, args: tuple, keywords: dict) -> tuple[str, dict, dict | None]:
        """(path, query, body) of a call: the path's arguments in it, the
        others (but None) in the query of a GET or DELETE, or the body."""
        if len(args) > len(self.params):
            raise TypeError(f"{self.name}() takes {len(self.params)} positional arguments")
        fields = {**dict(zip(self.params, args)), **keywords}
        path = "/".join(quote(str(fields.pop(p[1:-1])), safe="") if p.startswith("{") else p
                        for p in self.path.split("/"))
        fields = {k: v for k, v in fields.items() if v is not None}
        if self.method == "POST":
            return path, {}, fields
        return path, fields, None


VERBS = [Verb(*v) for v in (
    ("status", "GET", "status", (), "status", "node, mode, version, uptime, counts"),
    ("stats", "GET", "stats", (), "stats", "per-port and per-drop-reason counters"),
    ("add_port", "POST", "ports", ("name", "netns"), "port add", "attach a pod namespace"),
    ("label_port", "POST", "labels/port", ("port", "labels"), "port label",
     "set (key=value) or remove (key-) a pod's labels"),
    ("set_port", "POST", "ports/{name}", ("name",), "port set", "rate limits (token buckets)"),
    ("del_port", "DELETE", "ports/{name}", ("name",), "port del",
     "detach and delete a port"),
    ("ports", "GET", "ports", (), "port list", "all ports with counters"),
    ("port", "GET", "ports/{name}", ("name",), "port show", "one port with counters"),
    ("fdb", "GET", "fdb", ("network",), "fdb show", "MAC entries"),
    ("fdb_flush", "POST", "fdb/flush", ("network",), "fdb flush", "forget learned entries"),
    ("fdb_add", "POST", "fdb", ("mac", "peer", "network"), "fdb add",
     "static entry: MAC behind a peer"),
    ("fdb_del", "DELETE", "fdb/{mac}", ("mac", "network"), "fdb del", "delete one entry"),
    ("add_peer", "POST", "peers", ("ip", "network"), "peer add", "flood networks to a VTEP"),
    ("del_peer", "DELETE", "peers/{ip}", ("ip",), "peer del", "forget a peer"),
    ("peers", "GET", "peers", (), "peer list", "peers with counters"),
    ("peer", "GET", "peers/{ip}", ("ip",), "peer show", "one peer with counters"),
    ("capture", "POST", "capture", (), "capture",
     "frames at the capture points, as lines or a pcapng/pcap file"),
    ("trace", "POST", "trace", ("port", "frame"), "trace",
     "where a frame would go and why (nothing is sent or learned)"),
    ("apply_policies", "POST", "policies", ("manifests",), "policy apply",
     "create or update policies from YAML or JSON manifests"),
    ("delete_policy", "DELETE", "policies/{key}", ("key",), "policy delete", "delete a policy"),
    ("policies", "GET", "policies", (), "policy list", "policies with the pods they select"),
    ("policy", "GET", "policies/{key}", ("key",), "policy show",
     "one policy: its manifest and pods"),
    ("label_namespace", "POST", "labels/namespace", ("namespace", "labels"), "namespace label",
     "set (key=value) or remove (key-) a namespace's labels"),
    ("namespaces", "GET", "namespaces", (), "namespace list", "namespaces and their labels"),
    ("conntrack", "GET", "conntrack", ("port", "limit"), "conntrack show",
     "tracked connections"),
    ("conntrack_flush", "POST", "conntrack/flush", (), "conntrack flush",
     "forget every connection (each is checked anew on its next packet)"),
    ("reload", "POST", "reload", (), "reload",
     "re-read the config file and apply it (as SIGHUP does)"),
    ("stop", "POST", "stop", ("remove_ports",), "stop",
     "stop vswitchd; pods keep their interfaces for the next start"),
    ("ipam", "GET", "ipam", ("network",), "ipam show", "blocks and allocations"),
    ("ipam_gc", "POST", "ipam/gc", ("cni_network", "valid"), "ipam gc",
     "release allocations whose pod namespace is gone"),
    ("ipam_blocks", "GET", "ipam/blocks", (), "ipam blocks",
     "address blocks, cluster-wide (cluster)"),
    ("create_network", "POST", "networks", ("name", "vni", "subnet", "block_size", "mtu",
                                             "gateway", "masquerade", "subnet6", "block_size6"),
     "network create",
     "create a network everywhere"),
    ("delete_network", "DELETE", "networks/{name}", ("name",), "network delete",
     "delete a network everywhere"),
    ("networks", "GET", "networks", (), "network list", "networks of the cluster"),
    ("nodes", "GET", "nodes", (), "node list", "every node, VTEP, blocks, pods"),
    ("remove_node", "DELETE", "nodes/{name}", ("name",), "node remove",
     "a dead node is gone for good: free its blocks now"),
    ("cluster_status", "GET", "cluster", (), "cluster status",
     "etcd connection, lease, revision, last event"),
    ("attach", "POST", "attachments", ("container_id", "ifname", "netns")),
    ("detach", "POST", "attachments/delete", ("container_id", "ifname")),
    ("check_attachment", "POST", "attachments/check", ("container_id", "ifname", "netns")),
)]
BY_NAME = {v.name: v for v in VERBS}

# vswitchctl's verbs that group commands (port add, port del, ...), with their help.
GROUPS = {"port": "add, delete, list and show ports",
          "fdb": "show, flush, add or delete MAC entries",
          "peer": "VXLAN peers (overlay mode)", "policy": "Kubernetes NetworkPolicy",
          "namespace": "namespace labels (NetworkPolicy)",
          "conntrack": "connections NetworkPolicy tracks", "ipam": "address allocations",
          "network": "cluster-wide networks (cluster)", "node": "nodes of the cluster (cluster)",
          "cluster": "this node's view of the cluster"}

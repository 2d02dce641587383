"""The Prometheus endpoint ([metrics] listen = "HOST:PORT", off by default):
GET /metrics answers the text exposition format, read straight from the
data plane's counters at each scrape."""

from __future__ import annotations

import asyncio
import logging

from . import reporting
from .protocol import PORT_COUNTERS

log = logging.getLogger("vswitch.metrics")

READ_TIMEOUT = 10.0          # seconds a scraper may take to send its request


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Exposition:
    def __init__(self):
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str, samples):
        """samples: [(labels dict, value)]"""
        self.lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(stats: dict) -> str:
    """The exposition text of reporting.stats() (pure: runs off the event loop)."""
    out = _Exposition()
    out.family("vswitch_up", "gauge", "1 while vswitchd runs.", [({}, 1)])
    for counter in PORT_COUNTERS:
        out.family(f"vswitch_port_{counter}_total", "counter",
                   f"Per pod or host port: {counter.replace('_', ' ')}.",
                   [({"port": name}, c[counter]) for name, c in stats["ports"].items()])
    out.family("vswitch_drops_total", "counter", "Frames dropped, by reason.",
               [({"reason": r}, v) for r, v in stats["drops"].items()])
    out.family("vswitch_forwarded_total", "counter",
               "Frames delivered to one port or peer (unicast) or flooded.",
               [({"kind": "unicast"}, stats["unicast"]), ({"kind": "flooded"}, stats["flooded"])])
    out.family("vswitch_fdb_entries", "gauge", "MAC entries in the FDB.",
               [({}, stats["fdb"]["entries"])])
    for key in ("learned", "moves", "full", "expired"):
        out.family(f"vswitch_fdb_{key}_total", "counter", f"FDB events: {key}.",
                   [({}, stats["fdb"][key])])
    if stats["peers"]:
        for counter in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_dropped"):
            out.family(f"vswitch_peer_{counter}_total", "counter",
                       f"Per VXLAN peer: {counter.replace('_', ' ')}.",
                       [({"peer": p["ip"]}, p["counters"][counter]) for p in stats["peers"]])
        out.family("vswitch_gro_merged_total", "counter",
                   "Received TCP segments delivered inside a superframe.",
                   [({}, stats["gro_merged"])])
    out.family("vswitch_worker_frames_total", "counter",
               "Frames each forwarding thread read and switched.",
               [({"worker": str(k)}, w["frames"]) for k, w in enumerate(stats["workers"])])
    out.family("vswitch_arp_suppressed_total", "counter",
               "ARP requests for known pod addresses answered by the switch itself.",
               [({}, stats["arp_suppressed"])])
    out.family("vswitch_nd_suppressed_total", "counter",
               "IPv6 Neighbor Solicitations for known pod addresses answered by the switch.",
               [({}, stats["nd_suppressed"])])
    out.family("vswitch_neighbours", "gauge",
               "Pod addresses whose ARP or neighbour discovery the switch answers.",
               [({}, stats["neighbours"])])
    ct = stats["conntrack"]
    out.family("vswitch_conntrack_entries", "gauge", "Connections NetworkPolicy tracks.",
               [({}, ct["entries"])])
    out.family("vswitch_conntrack_max_entries", "gauge", "Connections it can track at once.",
               [({}, ct["max_entries"])])
    for key, text in (("created", "Connections tracked."),
                      ("expired", "Tracked connections that timed out."),
                      ("revoked", "Tracked connections a policy change no longer allowed."),
                      ("early_dropped", "Unanswered connections evicted from a full table.")):
        out.family(f"vswitch_conntrack_{key}_total", "counter", text, [({}, ct[key])])
    out.family("vswitch_conntrack_pod_entries", "gauge",
               "Connections charged to each pod (conntrack_max_per_pod bounds them).",
               [({"port": port}, n) for port, n in ct.get("per_pod", {}).items()])
    out.family("vswitch_fragments_passed_total", "counter",
               "Later fragments let through on their first fragment's verdict.",
               [({}, stats["fragments_passed"])])
    cluster = stats["cluster"]
    if cluster:
        for key, kind, text in (
                ("connected", "gauge", "1 while connected to etcd."),
                ("can_allocate", "gauge", "1 while this node's lease is provably alive."),
                ("fenced", "gauge", "1 while this node's pods and gateways are held down "
                 "(from start until its lease is proven, and once fenced)."),
                ("nodes", "gauge", "Nodes registered in the cluster."),
                ("endpoints", "gauge", "Pod addresses known cluster-wide."),
                ("blocks_held", "gauge", "Address blocks this node holds."),
                ("revision", "gauge", "etcd revision this node's view is at."),
                ("events_applied", "counter", "etcd events applied to the data plane."),
                ("reconnects", "counter", "Registrations with etcd (the first one too)."),
                ("relists", "counter", "Full listings of the cluster's state."),
                ("blocks_claimed", "counter", "Address blocks claimed."),
                ("blocks_released", "counter", "Empty address blocks given back."),
                ("blocks_lost", "counter", "Blocks found taken by another node on return."),
                ("records_ignored", "counter", "Malformed or unauthorized etcd records."),
                ("etcd_writes", "counter", "Writes (puts and transactions) sent to etcd.")):
            name = f"vswitch_cluster_{key}" + ("_total" if kind == "counter" else "")
            out.family(name, kind, text, [({}, int(cluster[key]))])
    lag = stats["loop_lag"]
    out.family("vswitch_loop_lag_max_seconds", "gauge",
               "The longest an event-loop timer woke late (since the start, over the last "
               "10 s), and of that the time its thread was running (held).",
               [({"over": "start", "kind": "lag"}, lag["max_ms"] / 1e3),
                ({"over": "recent", "kind": "lag"}, lag["recent_ms"] / 1e3),
                ({"over": "start", "kind": "held"}, lag["held_max_ms"] / 1e3),
                ({"over": "recent", "kind": "held"}, lag["held_recent_ms"] / 1e3)])
    capture = stats["capture"]
    out.family("vswitch_capture_sessions", "gauge", "Captures and hooks running.",
               [({}, capture["sessions"])])
    out.family("vswitch_capture_dropped_total", "counter",
               "Captured copies lost because a ring or a consumer was full.",
               [({"where": "ring"}, capture["ring_dropped"]),
                ({"where": "consumer"}, capture["consumer_dropped"])])
    if stats["hooks"]:
        out.family("vswitch_hook_calls_total", "counter", "Frames handed to a Python hook.",
                   [({"hook": h["call"]}, h["calls"]) for h in stats["hooks"]])
        out.family("vswitch_hook_dropped_total", "counter",
                   "Frames a hook's full queue had no room for.",
                   [({"hook": h["call"]}, h["dropped"]) for h in stats["hooks"]])
    return out.text()


async def start(listen: str, switch) -> asyncio.AbstractServer:
    host, _, port = listen.rpartition(":")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            request = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
                       ).decode("latin-1").split(" ")
            if request[:2] == ["GET", "/metrics"]:
                try:
                    # Counters are read on the loop (the data plane is not shared
                    # with threads); the text is made in a thread.
                    stats = reporting.stats(switch)
                    text = await asyncio.get_running_loop().run_in_executor(None, render, stats)
                    body, status = text.encode(), "200 OK"
                    kind = "text/plain; version=0.0.4; charset=utf-8"
                except Exception as e:
                    log.exception("metrics scrape failed")
                    body, status, kind = f"error: {e}\n".encode(), "500 Internal Server Error", \
                        "text/plain"
            else:
                body, status, kind = b"not found: try /metrics\n", "404 Not Found", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host.strip("[]"), int(port))
    log.info("metrics on http://%s/metrics", listen)
    return server

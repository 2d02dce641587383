"""vswitchctl: control and inspect a running vswitchd through its socket."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .client import Client, ClientError
from .protocol import CAPTURE_POINTS, DEFAULT_SOCKET, MAX_SNAPLEN
from .verbs import BY_NAME, GROUPS, VERBS


def bits(text: str) -> int:
    """10M, 1.5G, 64k, 1000: bits (or bits/s), SI multiples."""
    scale = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of bits: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return int(value)


def _table(rows: list[list], header: list[str]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [header, *rows])


def _port_rows(ports):
    return _table([[p["name"], p["network"], p["netns"], p["ifname"], p["mac"],
                    ",".join(p["addresses"]) or "-", p["state"],
                    p["counters"]["rx_packets"], p["counters"]["tx_packets"]] for p in ports],
                  ["NAME", "NETWORK", "NETNS", "IFNAME", "MAC", "ADDRESSES", "STATE",
                   "RX_PKTS", "TX_PKTS"])


def show_status(s):
    overlay = f"  vtep {s['vtep']}  peers {s['peers']}" if s["vtep"] else ""
    if s.get("cluster"):
        c = s["cluster"]
        overlay += (f"\ncluster: {'connected' if c['connected'] else 'DISCONNECTED'}  "
                    f"nodes {c['nodes']}  endpoints {c['endpoints']}  "
                    f"blocks held {c['blocks_held']}  revision {c['revision']}")
    networks = ", ".join(f"{n} (mtu {s['mtu'][n]['mtu']})" for n in s["networks"])
    masquerade = s.get("masquerade") or {}
    problems = ([f"masquerade: {masquerade['error']}"] if masquerade.get("error") else []) \
        + list(masquerade.get("warnings") or ())
    lag = s.get("loop_lag")
    if lag:
        overlay += f"\nevent loop late by at most {lag['max_ms']:g} ms ({lag['recent_ms']:g} ms " \
                   f"in the last 10 s), held by its own work {lag['held_max_ms']:g} ms " \
                   f"({lag['held_recent_ms']:g} ms)"
    return (f"node {s['node']}  mode {s['mode']}  version {s['version']}  uptime {s['uptime']}s\n"
            f"ports {s['ports']}  networks {networks}  "
            f"fdb entries {s['fdb_entries']} (aging {s['aging_time']:g}s){overlay}"
            + "".join(f"\nWARNING: {p}" for p in problems))


def show_peers(peers):
    return _table([[p["ip"], ",".join(p["networks"]), *p["counters"].values()] for p in peers],
                  ["PEER", "NETWORKS", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "TX_DROP"])


def show_port(p):
    lines = [f"{k}: {'-' if v is None else v}" for k, v in p.items()
             if k not in ("counters", "addresses", "pod", "policies")]
    if p.get("pod"):
        pod = p["pod"]
        lines.append(f"pod: {pod['namespace']}/{pod['name']}  labels "
                     + (", ".join(f"{k}={v}" for k, v in pod["labels"].items()) or "-")
                     + ("  named ports " + ", ".join(f"{k}={v[0]}/{v[1]}" for k, v in
                                                     pod["named_ports"].items())
                        if pod["named_ports"] else ""))
        lines += [f"isolated for {d} by: {', '.join(ps)}"
                  for d, ps in p["policies"].items() if ps]
    lines.append(f"addresses: {', '.join(p['addresses']) or '-'}")
    lines += [f"  {k}: {v}" for k, v in p["counters"].items()]
    return "\n".join(lines)


def show_fdb(entries):
    return _table([[e["network"], e["mac"], e["port"],
                    "pinned" if e["pinned"] else "static" if e["static"] else e["age"]]
                   for e in entries], ["NETWORK", "MAC", "PORT", "AGE"])


def show_ipam(r):
    nets = _table([[n["name"], n["subnet"] or "-", n["block"] or "-", n["gateway"] or "-",
                    n["subnet6"] or "-", n["gateway6"] or "-", n["host_port"] or "-",
                    n["free"]] for n in r["networks"]],
                  ["NETWORK", "SUBNET", "BLOCK", "GATEWAY", "SUBNET6", "GATEWAY6", "HOST_PORT",
                   "FREE"])
    allocs = _table([[a["network"], a["ip"] or "-", a["ip6"] or "-", a["mac"], a["container_id"],
                      a["ifname"], a["port"] or "-", a["state"]] for a in r["allocations"]],
                    ["NETWORK", "IP", "IP6", "MAC", "CONTAINER", "IFNAME", "PORT", "STATE"])
    return f"{nets}\n\n{allocs}"


def show_stats(s):
    ports = _table([[name, *c.values()] for name, c in s["ports"].items()],
                   ["PORT", "RX_PKTS", "RX_BYTES", "RX_DROP", "TX_PKTS", "TX_BYTES", "TX_DROP",
                    "POLICY_DENIED"])
    drops = "  ".join(f"{k}={v}" for k, v in s["drops"].items())
    fdb = "  ".join(f"{k}={v}" for k, v in s["fdb"].items())
    capture = "  ".join(f"{k}={v}" for k, v in s["capture"].items())
    text = (f"{ports}\n\nforwarded: unicast={s['unicast']}  flooded={s['flooded']}  "
            f"arp_suppressed={s['arp_suppressed']}  nd_suppressed={s['nd_suppressed']} "
            f"(neighbours {s['neighbours']})\n"
            f"drops: {drops}\nfdb: {fdb}\ncapture: {capture}\nconntrack: "
            + "  ".join(f"{k}={v}" for k, v in s["conntrack"].items() if k != "per_pod")
            + "\n" + show_conntrack_usage(s["conntrack"])
            + "\nworkers (frames switched): "
            + "  ".join(f"{k}={w['frames']}" for k, w in enumerate(s["workers"])))
    for h in s["hooks"]:
        state = "enabled" if h["enabled"] else f"disabled ({h['error']})"
        text += f"\nhook {h['call']}: {state}  calls={h['calls']}  dropped={h['dropped']}"
    if s["peers"]:
        tunnel = "  ".join(f"{k}={v}" for k, v in s["tunnel"].items())
        text += f"\ntunnel: {tunnel}  gro_merged={s['gro_merged']}\n\n{show_peers(s['peers'])}"
    return text


def _when(t) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def show_nodes(nodes):
    return _table([[n["name"] + (" (this)" if n["self"] else ""), n["state"], n["vtep"] or "-",
                    ",".join(n["blocks"]) or "-", n["pods"],
                    "now" if n["state"] == "alive" else f"gone since {_when(n['gone_since'])}"]
                   for n in nodes], ["NODE", "STATE", "VTEP", "BLOCKS", "PODS", "LAST_SEEN"])


def show_cluster(s):
    state = f"connected to {s['endpoint']}" if s["connected"] else \
        f"DISCONNECTED since {_when(s['since'])}: {s['error']}"
    lines = [f"node {s['node']}  vtep {s['vtep']}  etcd {', '.join(s['etcd'])}",
             f"{state}",
             f"lease {s['lease']}  proven for {s['lease_proven_for']:g}s  "
             f"can allocate {'yes' if s['can_allocate'] else 'NO'}"
             + ("  FENCED" if s["fenced"] else ""),
             f"revision {s['revision']}  events applied {s['events_applied']}  last event "
             + (f"{s['last_event']['key']} at {_when(s['last_event']['time'])}"
                if s["last_event"] else "-"),
             f"nodes {s['nodes']}  networks {s['networks']}  endpoints {s['endpoints']}",
             "blocks held: " + ("; ".join(f"{n}: {', '.join(b)}" for n, b in
                                          s["blocks_held"].items()) or "-"),
             "counters: " + "  ".join(f"{k}={v}" for k, v in s["counters"].items())]
    lines += [f"incident {_when(i['time'])}: {i['what']}" for i in s["incidents"]]
    return "\n".join(lines)


def port_add_options(p):
    p.add_argument("name")
    p.add_argument("--netns", required=True, help="namespace name (ip netns) or path")
    p.add_argument("--ifname", default="eth0", help="interface name in the pod (default eth0)")
    p.add_argument("--network", help="network name (default: the first configured)")
    p.add_argument("--ip", action="append",
                   help="address in CIDR form, inside the network's subnet (or subnet6: "
                        "give --ip once per family)")
    p.add_argument("--mac", help="MAC address (default: random, locally administered)")
    p.add_argument("--no-port-security", dest="port_security", action="store_false",
                   default=None, help="let the pod send from any MAC or IP (the default "
                   "without --ip; with --ip the port is bound to its MAC and address)")
    p.add_argument("--namespace", help="the pod's namespace, for NetworkPolicy (default "
                   "'default')")
    p.add_argument("--pod-name", help="the pod's name (default: the port's)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a pod label (repeatable)")
    p.add_argument("--named-port", action="append", default=[], metavar="NAME=[PROTO/]PORT",
                   help="a container port name, e.g. http=80 or dns=UDP/53 (repeatable)")


def port_set_options(p):
    p.add_argument("name")
    for key, what in (("ingress-rate", "what the pod sends into the switch, bits/s"),
                      ("ingress-burst", "bits"),
                      ("egress-rate", "what the switch sends to the pod, bits/s"),
                      ("egress-burst", "bits")):
        p.add_argument(f"--{key}", type=bits, metavar="N[k|M|G]", help=f"{what}; 0: no limit")


def labels_options(who: str):
    def add(p):
        p.add_argument(who, metavar="name")
        p.add_argument("labels", nargs="+", metavar="KEY=VALUE|KEY-")
    return add


def capture_options(p):
    p.add_argument("--port", help="one port (a name, or vxlan:IP for a peer); default all")
    p.add_argument("--point", action="append", choices=CAPTURE_POINTS,
                   help="a capture point (repeatable); default all")
    p.add_argument("--filter", help="a tcpdump filter expression, e.g. 'icmp or arp'")
    p.add_argument("-c", "--count", type=int, help="stop after this many frames")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("-w", dest="write", metavar="FILE",
                   help="write a capture file ('-': stream to stdout, e.g. into tcpdump -r -)")
    p.add_argument("--format", choices=("pcapng", "pcap"), default="pcapng",
                   help="file format for -w (default pcapng: per-port interfaces, drop "
                   "reasons as comments)")
    p.add_argument("-s", "--snaplen", type=int, default=MAX_SNAPLEN, help="bytes kept per frame")


def trace_options(p):
    p.add_argument("--in-port", dest="port", required=True,
                   help="the port the frame comes from")
    frame = p.add_mutually_exclusive_group(required=True)
    frame.add_argument("--hex", help="the frame as hex")
    frame.add_argument("--scapy", metavar="EXPR",
                       help="the frame as a scapy expression, e.g. \"Ether(dst='ff:ff:ff:ff:ff:ff')"
                       "/ARP(pdst='198.18.0.2')\"")


def network_create_options(p):
    p.add_argument("name")
    p.add_argument("--vni", type=int, required=True)
    p.add_argument("--subnet", help="IPv4 CIDR, carved into blocks (required unless the "
                   "network is IPv6 only: --subnet6 alone)")
    p.add_argument("--block-size", type=int, default=26,
                   help="prefix length of the blocks nodes claim (default 26: 64 addresses)")
    p.add_argument("--mtu", type=int, help="pod MTU (default: the underlay MTU less the "
                   "encapsulation's overhead: 50 bytes for VXLAN on an IPv4 underlay, 70 on "
                   "IPv6)")
    p.add_argument("--subnet6", help="IPv6 CIDR, carved into IPv6 blocks: dual-stack "
                   "with --subnet, else IPv6 only")
    p.add_argument("--block-size6", type=int,
                   help="prefix length of the IPv6 blocks (default 122: 64 addresses)")
    p.add_argument("--no-gateway", dest="gateway", action="store_false",
                   help="no host port on the nodes: pods reach only each other")
    p.add_argument("--no-masquerade", dest="masquerade", action="store_false",
                   help="pods' traffic to outside keeps their addresses")


def positional(*names: str, **fixed):
    """Options that are positional arguments (and fixed ones, e.g. metavars)."""
    def add(p):
        for name in names:
            p.add_argument(name, **fixed)
    return add


def network_option(p):
    p.add_argument("--network")


# Each command's own options (by verb: verbs.VERBS gives its words and help).
OPTIONS = {
    "add_port": port_add_options, "label_port": labels_options("port"),
    "set_port": port_set_options, "del_port": positional("name"), "port": positional("name"),
    "fdb": network_option, "fdb_flush": network_option,
    "fdb_add": lambda p: (p.add_argument("mac"), p.add_argument(
        "--peer", required=True, help="the peer's VTEP address"), network_option(p)),
    "fdb_del": lambda p: (p.add_argument("mac"), network_option(p)),
    "add_peer": lambda p: (p.add_argument("ip"), p.add_argument(
        "--network", help="one network (default: all)")),
    "del_peer": positional("ip"), "peer": positional("ip"),
    "capture": capture_options, "trace": trace_options,
    "apply_policies": lambda p: p.add_argument(
        "-f", "--filename", required=True, metavar="FILE", help="a manifest file ('-': "
        "standard input): one object, several documents, or a List"),
    "delete_policy": positional("key", metavar="NAMESPACE/NAME"),
    "policy": positional("key", metavar="NAMESPACE/NAME"),
    "label_namespace": labels_options("namespace"),
    "conntrack": lambda p: (p.add_argument("--port", help="only those in or out of this port"),
                            p.add_argument("--limit", type=int, default=1000,
                                           help="at most this many (0: all)")),
    "stop": lambda p: p.add_argument("--remove-ports", action="store_true",
                                     help="delete every port's interface too (pods lose their "
                                     "network)"),
    "ipam": network_option, "create_network": network_create_options,
    "delete_network": positional("name"), "remove_node": positional("name"),
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a verb's own --json must not reset one given before the verb.
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output")
    p = argparse.ArgumentParser(prog="vswitchctl", parents=[common],
                                description="Control and inspect vswitchd.")
    p.add_argument("--socket", default=os.environ.get("VSWITCH_SOCKET", DEFAULT_SOCKET),
                   help=f"daemon socket (default {DEFAULT_SOCKET}, or $VSWITCH_SOCKET)")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    groups: dict = {}
    for verb in VERBS:
        if not verb.cli:
            continue
        words = verb.cli.split()
        if len(words) == 1:
            command = sub.add_parser(words[0], parents=[common], help=verb.help)
        else:
            if words[0] not in groups:
                groups[words[0]] = sub.add_parser(words[0], help=GROUPS[words[0]]) \
                    .add_subparsers(dest="action", required=True, metavar="ACTION")
            command = groups[words[0]].add_parser(words[1], parents=[common], help=verb.help)
        command.set_defaults(call=verb.name)
        if verb.name in OPTIONS:
            OPTIONS[verb.name](command)
    return p


def capture(args, client: Client) -> int:
    """Stream frames to a file, stdout, or as one line each."""
    from .pcap import PcapngWriter, PcapWriter
    out = writer = None
    if args.write:
        out = sys.stdout.buffer if args.write == "-" else open(args.write, "wb")
        writer = (PcapngWriter if args.format == "pcapng" else PcapWriter)(out, args.snaplen)
        out.flush()
    seen = 0
    try:
        for meta, data in client.capture(port=args.port, point=args.point, filter=args.filter,
                                         count=args.count, duration=args.duration,
                                         snaplen=args.snaplen):
            if writer and out:
                writer.write(meta["ts_ns"], meta["port"], meta["point"], data, meta["orig_len"],
                             meta["reason"])
                out.flush()
            else:
                print(capture_line(meta, data), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:             # the reader (tcpdump -r -) went away
        sys.stderr.close()
        return 0
    finally:
        if out is not None and out is not sys.stdout.buffer:
            out.close()
    print(f"{seen} frames captured", file=sys.stderr)
    return 0


def capture_line(meta: dict, data: bytes) -> str:
    import time
    when = time.strftime("%H:%M:%S", time.localtime(meta["ts_ns"] / 1e9))
    reason = f" [{meta['reason']}]" if meta["reason"] else ""
    try:
        import scapy.layers.inet  # noqa: F401  (IP, TCP, UDP, ICMP decoding)
        from scapy.layers.l2 import Ether
        summary = Ether(data).summary()
    except Exception:                   # no scapy, or a frame it cannot take apart
        summary = f"{len(data)} bytes"
    return (f"{when}.{meta['ts_ns'] % 10**9 // 1000:06d} {meta['point']:<7} {meta['port']}"
            f"{reason} {summary}")


def trace_frame(args) -> bytes:
    if args.hex:
        try:
            return bytes.fromhex(args.hex.replace(":", "").replace(" ", ""))
        except ValueError:
            raise ClientError("--hex: not a hex string") from None
    try:
        import scapy.all
    except ImportError:
        raise ClientError("--scapy needs scapy: pip install 'vswitch[tools]'") from None
    try:
        return bytes(eval(args.scapy, vars(scapy.all)))     # the user's own expression
    except Exception as e:
        raise ClientError(f"--scapy: {e}") from None


def show_trace(r):
    lines = [f"trace: frame from {r['port']} ({len(r['frame']) // 2} bytes)"]
    try:
        from scapy.layers.l2 import Ether
        lines.append(f"  parsed: {Ether(bytes.fromhex(r['frame'])).summary()}")
    except Exception:
        pass
    for step in r["steps"]:
        kind = step.pop("step")
        lines.append(f"  {kind}: " + ", ".join(f"{k} {v}" for k, v in step.items()))
    return "\n".join(lines)


def read_manifests(path: str) -> list:
    """The documents of a YAML (or JSON) manifest file."""
    import yaml
    try:
        text = sys.stdin.read() if path == "-" else open(path).read()
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as e:
        raise ClientError(f"{path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ClientError(f"{path}: not YAML or JSON: {e}") from None


def pod_identity(args) -> dict | None:
    if not (args.namespace or args.pod_name or args.label or args.named_port):
        return None
    labels: dict[str, str] = {}
    ports: dict[str, str] = {}
    for item, into, what in [(x, labels, "--label") for x in args.label] + \
            [(x, ports, "--named-port") for x in args.named_port]:
        key, eq, value = item.partition("=")
        if not eq:
            raise ClientError(f"{what} {item!r}: expected KEY=VALUE")
        into[key] = value
    return {"namespace": args.namespace, "name": args.pod_name, "labels": labels,
            "named_ports": ports}


def show_policies(policies):
    return _table([[f"{p['namespace']}/{p['name']}", ",".join(p["types"]), p["ingress_rules"],
                    p["egress_rules"], ", ".join(q["pod"] for q in p["pods"]) or "-"]
                   for p in policies], ["POLICY", "TYPES", "INGRESS", "EGRESS", "PODS"])


def show_policy(p):
    import yaml
    pods = "\n".join(f"  {q['pod']}  {', '.join(q['addresses'])}  on {q['node']}"
                     for q in p["pods"]) or "  (none)"
    return (f"policy {p['namespace']}/{p['name']} (id {p['id']})  types "
            f"{', '.join(p['types']) or '-'}\nselects:\n{pods}\n---\n"
            + yaml.safe_dump(p["manifest"], sort_keys=False).rstrip())


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def show_conntrack(entries):
    return _table([[e["network"], e["protocol"], endpoint(e["source"], e["sport"]),
                    endpoint(e["destination"], e["dport"]), e["state"], e["expires_in"],
                    e["in_port"], e["out_port"], e["charged_to"]] for e in entries],
                  ["NETWORK", "PROTO", "SOURCE", "DESTINATION", "STATE", "EXPIRES_IN", "IN",
                   "OUT", "CHARGED_TO"])


def show_conntrack_usage(ct: dict) -> str:
    """Each pod's share of the table in use (conntrack_max_per_pod)."""
    per_pod = "  ".join(f"{k}={v}" for k, v in ct["per_pod"].items()) or "none"
    return (f"connections per pod (at most {ct['max_per_pod']} each, "
            f"{ct['entries']} of {ct['max_entries']} in all): {per_pod}")


def conntrack_table(r, usage: dict | None = None) -> str:
    return show_conntrack(r) + ("\n\n" + show_conntrack_usage(usage) if usage else "")


def network_rows(r):
    return _table(
        [[n["name"], n["vni"], ", ".join(x for x in (n["subnet"], n["subnet6"]) if x),
          ", ".join(f"/{b}" for b in (n["block_size"], n["block_size6"]) if b), n["mtu"],
          n["blocks"], n["endpoints"], n["gateway_here"] or ("-" if n["gateway"] else "none"),
          "yes" if n["masquerade"] else "no", "yes" if n["joined"] else "no"] for n in r],
        ["NAME", "VNI", "SUBNET", "BLOCKS_OF", "MTU", "BLOCKS", "ENDPOINTS", "GATEWAY",
         "MASQUERADE", "JOINED"])


# How each command prints its answer (without --json).
RENDER = {
    "status": show_status, "stats": show_stats, "add_port": show_port,
    "label_port": show_port, "set_port": show_port, "port": show_port, "ports": _port_rows,
    "del_port": lambda r: f"port {r['deleted']} deleted",
    "fdb": show_fdb, "fdb_add": lambda r: f"{r['mac']} -> vxlan:{r['peer']} (static)",
    "fdb_del": lambda r: f"{r['deleted']} deleted",
    "fdb_flush": lambda r: f"{r['flushed']} entries flushed",
    "add_peer": lambda r: show_peers([r]), "peer": lambda r: show_peers([r]),
    "peers": show_peers, "del_peer": lambda r: f"peer {r['deleted']} deleted",
    "trace": show_trace,
    "apply_policies": lambda r: "\n".join(f"networkpolicy {x['policy']} {x['result']}"
                                          for x in r),
    "delete_policy": lambda r: f"policy {r['deleted']} deleted",
    "policy": show_policy, "policies": show_policies,
    "label_namespace": lambda r: f"namespace {r['namespace']}: " + ", ".join(
        f"{k}={v}" for k, v in r["labels"].items()),
    "namespaces": lambda r: _table(
        [[n["namespace"], ", ".join(f"{k}={v}" for k, v in n["labels"].items())] for n in r],
        ["NAMESPACE", "LABELS"]),
    "conntrack": conntrack_table,
    "conntrack_flush": lambda r: f"{r['flushed']} connections flushed",
    "reload": lambda r: "reloaded: " + ("; ".join(r["changes"]) or "no changes"),
    "stop": lambda r: "vswitchd stopping" + (", removing all ports" if r["remove_ports"]
                                             else ""),
    "ipam": show_ipam,
    "ipam_blocks": lambda r: _table(
        [[b["network"], b["block"], b["node"], b["endpoints"],
          "alive" if b["alive"] else "gone"] for b in r],
        ["NETWORK", "BLOCK", "NODE", "ENDPOINTS", "NODE_STATE"]),
    "ipam_gc": lambda r: f"{len(r['released'])} allocations released" + "".join(
        f"\n  {a['network']} {a['ip']} {a['container_id']}/{a['ifname']}"
        for a in r["released"]),
    "create_network": lambda r: f"network {r['name']} created",
    "delete_network": lambda r: f"network {r['deleted']} deleted",
    "networks": network_rows, "nodes": show_nodes,
    "remove_node": lambda r: f"node {r['removed']} removed, "
                             f"{r['blocks_released']} blocks released",
    "cluster_status": show_cluster,
}


def port_add_call(args) -> tuple[tuple, dict]:
    options = {k: getattr(args, k) for k in ("ifname", "network", "mac", "port_security")}
    options["ip"] = ",".join(args.ip) if args.ip else None
    return (args.name, args.netns), {**options, "pod": pod_identity(args)}


# The commands whose call is more than their options under the verb's names.
CALLS = {
    "add_port": port_add_call,
    "set_port": lambda args: ((args.name,), {k: getattr(args, k) for k in (
        "ingress_rate", "ingress_burst", "egress_rate", "egress_burst")}),
    "trace": lambda args: ((args.port, trace_frame(args).hex()), {}),
    "apply_policies": lambda args: ((read_manifests(args.filename),), {}),
    "create_network": lambda args: ((args.name, args.vni), {
        "subnet": args.subnet, "block_size": args.block_size, "mtu": args.mtu,
        "gateway": args.gateway, "masquerade": args.masquerade and args.gateway,
        "subnet6": args.subnet6, "block_size6": args.block_size6}),
}


def run(args, client: Client):
    """(result, text renderer) for the parsed command."""
    verb = BY_NAME[args.call]
    if verb.name in CALLS:
        arguments, keywords = CALLS[verb.name](args)
    else:
        arguments, keywords = tuple(getattr(args, p, None) for p in verb.params), {}
    result = client.call(verb.name, *arguments, **keywords)
    if verb.name == "conntrack" and not getattr(args, "json", False):
        usage = client.stats()["conntrack"]          # the shares, beside the table
        return result, lambda r: conntrack_table(r, usage)
    return result, RENDER[verb.name]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.call == "capture":
            return capture(args, Client(args.socket))
        result, render = run(args, Client(args.socket))
    except ClientError as e:
        print(f"vswitchctl: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if getattr(args, "json", False) else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

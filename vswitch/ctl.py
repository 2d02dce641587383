"""vswitchctl: control and inspect a running vswitchd through its socket."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .client import Client, ClientError
from .protocol import CAPTURE_POINTS, DEFAULT_SOCKET, MAX_SNAPLEN


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
            + "\n" + show_conntrack_usage(s["conntrack"]))
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
    sub.add_parser("status", parents=[common], help="node, mode, version, uptime, counts")
    sub.add_parser("stats", parents=[common], help="per-port and per-drop-reason counters")

    port = sub.add_parser("port", help="add, delete, list and show ports").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    add = port.add_parser("add", parents=[common], help="attach a pod namespace")
    add.add_argument("name")
    add.add_argument("--netns", required=True, help="namespace name (ip netns) or path")
    add.add_argument("--ifname", default="eth0", help="interface name in the pod (default eth0)")
    add.add_argument("--network", help="network name (default: the first configured)")
    add.add_argument("--ip", action="append",
                     help="address in CIDR form, inside the network's subnet (or subnet6: "
                          "give --ip once per family)")
    add.add_argument("--mac", help="MAC address (default: random, locally administered)")
    add.add_argument("--no-port-security", dest="port_security", action="store_false",
                     default=None, help="let the pod send from any MAC or IP (the default "
                     "without --ip; with --ip the port is bound to its MAC and address)")
    add.add_argument("--namespace", help="the pod's namespace, for NetworkPolicy (default "
                     "'default')")
    add.add_argument("--pod-name", help="the pod's name (default: the port's)")
    add.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                     help="a pod label (repeatable)")
    add.add_argument("--named-port", action="append", default=[], metavar="NAME=[PROTO/]PORT",
                     help="a container port name, e.g. http=80 or dns=UDP/53 (repeatable)")
    label = port.add_parser("label", parents=[common],
                            help="set (key=value) or remove (key-) a pod's labels")
    label.add_argument("name")
    label.add_argument("labels", nargs="+", metavar="KEY=VALUE|KEY-")
    pset = port.add_parser("set", parents=[common], help="rate limits (token buckets)")
    pset.add_argument("name")
    for key, what in (("ingress-rate", "what the pod sends into the switch, bits/s"),
                      ("ingress-burst", "bits"),
                      ("egress-rate", "what the switch sends to the pod, bits/s"),
                      ("egress-burst", "bits")):
        pset.add_argument(f"--{key}", type=bits, metavar="N[k|M|G]", help=f"{what}; 0: no limit")
    port.add_parser("del", parents=[common], help="detach and delete a port").add_argument("name")
    port.add_parser("list", parents=[common], help="all ports with counters")
    port.add_parser("show", parents=[common], help="one port with counters").add_argument("name")

    fdb = sub.add_parser("fdb", help="show, flush, add or delete MAC entries").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    for action in ("show", "flush"):
        fdb.add_parser(action, parents=[common]).add_argument("--network")
    fdb_add = fdb.add_parser("add", parents=[common], help="static entry: MAC behind a peer")
    fdb_add.add_argument("mac")
    fdb_add.add_argument("--peer", required=True, help="the peer's VTEP address")
    fdb_add.add_argument("--network")
    fdb_del = fdb.add_parser("del", parents=[common], help="delete one entry")
    fdb_del.add_argument("mac")
    fdb_del.add_argument("--network")

    peer = sub.add_parser("peer", help="VXLAN peers (overlay mode)").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    peer_add = peer.add_parser("add", parents=[common], help="flood networks to a VTEP")
    peer_add.add_argument("ip")
    peer_add.add_argument("--network", help="one network (default: all)")
    peer.add_parser("del", parents=[common], help="forget a peer").add_argument("ip")
    peer.add_parser("list", parents=[common], help="peers with counters")
    peer.add_parser("show", parents=[common], help="one peer with counters").add_argument("ip")

    cap = sub.add_parser("capture", parents=[common],
                         help="frames at the capture points, as lines or a pcapng/pcap file")
    cap.add_argument("--port", help="one port (a name, or vxlan:IP for a peer); default all")
    cap.add_argument("--point", action="append", choices=CAPTURE_POINTS,
                     help="a capture point (repeatable); default all")
    cap.add_argument("--filter", help="a tcpdump filter expression, e.g. 'icmp or arp'")
    cap.add_argument("-c", "--count", type=int, help="stop after this many frames")
    cap.add_argument("--duration", type=float, help="stop after this many seconds")
    cap.add_argument("-w", dest="write", metavar="FILE",
                     help="write a capture file ('-': stream to stdout, e.g. into tcpdump -r -)")
    cap.add_argument("--format", choices=("pcapng", "pcap"), default="pcapng",
                     help="file format for -w (default pcapng: per-port interfaces, drop "
                     "reasons as comments)")
    cap.add_argument("-s", "--snaplen", type=int, default=MAX_SNAPLEN, help="bytes kept per frame")

    trace = sub.add_parser("trace", parents=[common],
                           help="where a frame would go and why (nothing is sent or learned)")
    trace.add_argument("--in-port", required=True, help="the port the frame comes from")
    frame = trace.add_mutually_exclusive_group(required=True)
    frame.add_argument("--hex", help="the frame as hex")
    frame.add_argument("--scapy", metavar="EXPR",
                      help="the frame as a scapy expression, e.g. \"Ether(dst='ff:ff:ff:ff:ff:ff')"
                      "/ARP(pdst='198.18.0.2')\"")

    policy = sub.add_parser("policy", help="Kubernetes NetworkPolicy").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    apply = policy.add_parser("apply", parents=[common],
                              help="create or update policies from YAML or JSON manifests")
    apply.add_argument("-f", "--filename", required=True, metavar="FILE",
                       help="a manifest file ('-': standard input): one object, several "
                       "documents, or a List")
    policy.add_parser("delete", parents=[common], help="delete a policy").add_argument(
        "name", metavar="NAMESPACE/NAME")
    policy.add_parser("list", parents=[common], help="policies with the pods they select")
    policy.add_parser("show", parents=[common], help="one policy: its manifest and pods"
                      ).add_argument("name", metavar="NAMESPACE/NAME")
    namespace = sub.add_parser("namespace", help="namespace labels (NetworkPolicy)"
                               ).add_subparsers(dest="action", required=True, metavar="ACTION")
    nslabel = namespace.add_parser("label", parents=[common],
                                   help="set (key=value) or remove (key-) a namespace's labels")
    nslabel.add_argument("name")
    nslabel.add_argument("labels", nargs="+", metavar="KEY=VALUE|KEY-")
    namespace.add_parser("list", parents=[common], help="namespaces and their labels")
    conntrack = sub.add_parser("conntrack", help="connections NetworkPolicy tracks"
                               ).add_subparsers(dest="action", required=True, metavar="ACTION")
    ct_show = conntrack.add_parser("show", parents=[common], help="tracked connections")
    ct_show.add_argument("--port", help="only those in or out of this port")
    ct_show.add_argument("--limit", type=int, default=1000, help="at most this many (0: all)")
    conntrack.add_parser("flush", parents=[common],
                         help="forget every connection (each is checked anew on its next packet)")

    sub.add_parser("reload", parents=[common],
                   help="re-read the config file and apply it (as SIGHUP does)")
    stop = sub.add_parser("stop", parents=[common],
                          help="stop vswitchd; pods keep their interfaces for the next start")
    stop.add_argument("--remove-ports", action="store_true",
                      help="delete every port's interface too (pods lose their network)")

    ipam = sub.add_parser("ipam", help="address allocations").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    ipam.add_parser("show", parents=[common], help="blocks and allocations").add_argument(
        "--network")
    ipam.add_parser("gc", parents=[common],
                    help="release allocations whose pod namespace is gone")
    ipam.add_parser("blocks", parents=[common], help="address blocks, cluster-wide (cluster)")

    network = sub.add_parser("network", help="cluster-wide networks (cluster)").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    create = network.add_parser("create", parents=[common], help="create a network everywhere")
    create.add_argument("name")
    create.add_argument("--vni", type=int, required=True)
    create.add_argument("--subnet", help="IPv4 CIDR, carved into blocks (required unless the "
                        "network is IPv6 only: --subnet6 alone)")
    create.add_argument("--block-size", type=int, default=26,
                        help="prefix length of the blocks nodes claim (default 26: 64 addresses)")
    create.add_argument("--mtu", type=int, help="pod MTU (default: the underlay MTU less the VXLAN "
                        "overhead: 50 bytes on an IPv4 underlay, 70 on IPv6)")
    create.add_argument("--subnet6", help="IPv6 CIDR, carved into IPv6 blocks: dual-stack "
                        "with --subnet, else IPv6 only")
    create.add_argument("--block-size6", type=int,
                        help="prefix length of the IPv6 blocks (default 122: 64 addresses)")
    create.add_argument("--no-gateway", dest="gateway", action="store_false",
                        help="no host port on the nodes: pods reach only each other")
    create.add_argument("--no-masquerade", dest="masquerade", action="store_false",
                        help="pods' traffic to outside keeps their addresses")
    network.add_parser("delete", parents=[common], help="delete a network everywhere").add_argument(
        "name")
    network.add_parser("list", parents=[common], help="networks of the cluster")

    node = sub.add_parser("node", help="nodes of the cluster (cluster)").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    node.add_parser("list", parents=[common], help="every node, VTEP, blocks, pods")
    node.add_parser("remove", parents=[common],
                    help="a dead node is gone for good: free its blocks now").add_argument("name")

    cluster = sub.add_parser("cluster", help="this node's view of the cluster").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    cluster.add_parser("status", parents=[common],
                       help="etcd connection, lease, revision, last event")
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


def run_policy(args, client: Client):
    """The policy, namespace and conntrack verbs."""
    verb, action = args.verb, args.action
    if verb == "policy":
        if action == "apply":
            return client.apply_policies(read_manifests(args.filename)), lambda r: "\n".join(
                f"networkpolicy {x['policy']} {x['result']}" for x in r)
        if action == "delete":
            return client.delete_policy(args.name), lambda r: f"policy {r['deleted']} deleted"
        if action == "show":
            return client.policy(args.name), show_policy
        return client.policies(), show_policies
    if verb == "namespace":
        if action == "label":
            return client.label_namespace(args.name, args.labels), lambda r: (
                f"namespace {r['namespace']}: " + ", ".join(
                    f"{k}={v}" for k, v in r["labels"].items()))
        return client.namespaces(), lambda r: _table(
            [[n["namespace"], ", ".join(f"{k}={v}" for k, v in n["labels"].items())] for n in r],
            ["NAMESPACE", "LABELS"])
    if action == "flush":
        return client.conntrack_flush(), lambda r: f"{r['flushed']} connections flushed"
    if getattr(args, "json", False):
        return client.conntrack(args.port, args.limit), show_conntrack
    table = client.conntrack(args.port, args.limit)
    usage = client.stats()["conntrack"]
    return table, lambda r: show_conntrack(r) + "\n\n" + show_conntrack_usage(usage)


def run(args, client: Client):
    """(result, text renderer) for the parsed command."""
    verb, action = args.verb, getattr(args, "action", None)
    if verb == "trace":
        return client.trace(args.in_port, trace_frame(args)), show_trace
    if verb in ("policy", "namespace", "conntrack"):
        return run_policy(args, client)
    if verb == "status":
        return client.status(), show_status
    if verb == "stats":
        return client.stats(), show_stats
    if verb == "port":
        if action == "add":
            options = {k: getattr(args, k) for k in ("ifname", "network", "mac", "port_security")}
            options["ip"] = ",".join(args.ip) if args.ip else None
            return client.add_port(args.name, args.netns, pod=pod_identity(args), **options), \
                show_port
        if action == "label":
            return client.label_port(args.name, args.labels), show_port
        if action == "set":
            rates = {k: getattr(args, k) for k in ("ingress_rate", "ingress_burst",
                                                   "egress_rate", "egress_burst")}
            return client.set_port(args.name, **rates), show_port
        if action == "del":
            return client.del_port(args.name), lambda r: f"port {r['deleted']} deleted"
        if action == "list":
            return client.ports(), _port_rows
        return client.port(args.name), show_port
    if verb == "peer":
        if action == "add":
            return client.add_peer(args.ip, args.network), lambda r: show_peers([r])
        if action == "del":
            return client.del_peer(args.ip), lambda r: f"peer {r['deleted']} deleted"
        if action == "show":
            return client.peer(args.ip), lambda r: show_peers([r])
        return client.peers(), show_peers
    if verb == "reload":
        return client.reload(), lambda r: "reloaded: " + ("; ".join(r["changes"]) or "no changes")
    if verb == "stop":
        return client.stop(args.remove_ports), lambda r: "vswitchd stopping" + (
            ", removing all ports" if r["remove_ports"] else "")
    if verb == "ipam":
        if action == "show":
            return client.ipam(args.network), show_ipam
        if action == "blocks":
            return client.ipam_blocks(), lambda r: _table(
                [[b["network"], b["block"], b["node"], b["endpoints"],
                  "alive" if b["alive"] else "gone"] for b in r],
                ["NETWORK", "BLOCK", "NODE", "ENDPOINTS", "NODE_STATE"])
        return client.ipam_gc(), lambda r: f"{len(r['released'])} allocations released" + "".join(
            f"\n  {a['network']} {a['ip']} {a['container_id']}/{a['ifname']}" for a in r["released"])
    if verb == "network":
        if action == "create":
            return client.create_network(args.name, args.vni, args.subnet, args.block_size,
                                         args.mtu, args.gateway, args.masquerade and args.gateway,
                                         args.subnet6, args.block_size6
                                         ), lambda r: f"network {r['name']} created"
        if action == "delete":
            return client.delete_network(args.name), lambda r: f"network {r['deleted']} deleted"
        return client.networks(), lambda r: _table(
            [[n["name"], n["vni"], ", ".join(x for x in (n["subnet"], n["subnet6"]) if x),
              ", ".join(f"/{b}" for b in (n["block_size"], n["block_size6"]) if b), n["mtu"],
              n["blocks"],
              n["endpoints"], n["gateway_here"] or ("-" if n["gateway"] else "none"),
              "yes" if n["masquerade"] else "no", "yes" if n["joined"] else "no"] for n in r],
            ["NAME", "VNI", "SUBNET", "BLOCKS_OF", "MTU", "BLOCKS", "ENDPOINTS", "GATEWAY",
             "MASQUERADE", "JOINED"])
    if verb == "node":
        if action == "remove":
            return client.remove_node(args.name), \
                lambda r: f"node {r['removed']} removed, {r['blocks_released']} blocks released"
        return client.nodes(), show_nodes
    if verb == "cluster":
        return client.cluster_status(), show_cluster
    if action == "show":
        return client.fdb(args.network), show_fdb
    if action == "add":
        return client.fdb_add(args.mac, args.peer, args.network), \
            lambda r: f"{r['mac']} -> vxlan:{r['peer']} (static)"
    if action == "del":
        return client.fdb_del(args.mac, args.network), lambda r: f"{r['deleted']} deleted"
    return client.fdb_flush(args.network), lambda r: f"{r['flushed']} entries flushed"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb == "capture":
            return capture(args, Client(args.socket))
        result, render = run(args, Client(args.socket))
    except ClientError as e:
        print(f"vswitchctl: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if getattr(args, "json", False) else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

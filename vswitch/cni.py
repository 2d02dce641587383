"""vswitch-cni: the CNI plugin (spec 1.1.0; also answers 0.3.x, 0.4.0 and
1.0.0 configs). The container runtime executes it as $CNI_PATH/vswitch with
the CNI_* environment and the network config on stdin; it asks vswitchd,
over the control socket, to attach or detach the pod, and prints the spec's
result or error JSON.

Network config keys: "type": "vswitch", "name" (the CNI network), "network"
(the vswitch network; default: the daemon's first), "socket" (default
/run/vswitch/vswitchd.sock), "mtu" (optional, at most the network's), "dns"
(passed through to the result). Static requests: runtimeConfig "ips"/"mac"
(capabilities), args.cni "ips"/"mac", or CNI_ARGS IP=/MAC=. Who the pod
is, for NetworkPolicy: CNI_ARGS K8S_POD_NAMESPACE and K8S_POD_NAME, labels
in args.cni "labels" or runtimeConfig "labels", port names in args.cni
"namedPorts" (see Request.pod).

Error codes: the spec's (1 incompatible version, 3 unknown container: the
namespace does not exist, 4 invalid environment variables, 6 undecodable
stdin, 7 invalid network config, 11 try again later: vswitchd not answering
or busy with the same attachment, 50 not ready), and ours: 100 vswitchd
refused the request (the message says why), 101 no free address in this
node's block, 102 requested address or MAC unavailable (outside the block,
reserved or taken), 103 CHECK found the attachment not as it should be.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys

from .client import Client, ClientError
from .protocol import CONTAINER_ID_RE, DEFAULT_SOCKET, ErrorKind

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]

# Codes from the spec, and ours (100+).
INCOMPATIBLE_VERSION, UNKNOWN_CONTAINER, INVALID_ENV, BAD_CONTENT = 1, 3, 4, 6
INVALID_CONFIG, TRY_AGAIN, NOT_READY = 7, 11, 50
REFUSED, EXHAUSTED, UNAVAILABLE, CHECK_FAILED = 100, 101, 102, 103
LAST_RESORT = "vswitch-cni failed on this input"      # an unforeseen error, still as the spec's JSON
KIND_CODES: dict[str, int] = {
    ErrorKind.EXHAUSTED: EXHAUSTED, ErrorKind.UNAVAILABLE: UNAVAILABLE,
    ErrorKind.INVALID: INVALID_CONFIG, ErrorKind.UNKNOWN_NETWORK: INVALID_CONFIG,
    ErrorKind.BUSY: TRY_AGAIN, ErrorKind.CHECK: CHECK_FAILED}


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


# The CNI spec's network name: what runtimes use in paths and keys.
NETWORK_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


class Request:
    """One invocation: the environment and the network config."""

    def __init__(self, environ, stdin: str | bytes):
        self.env = environ
        self.command = self._env("CNI_COMMAND")
        self.version = LATEST
        try:
            stdin_text = stdin.decode() if isinstance(stdin, bytes) else stdin
        except UnicodeDecodeError as e:
            raise CniError(BAD_CONTENT, "network config on stdin is not UTF-8", str(e)) from None
        if self.command == "VERSION" and not stdin_text.strip():
            self.conf = {}
            return
        try:
            conf = json.loads(stdin_text)
        except (ValueError, RecursionError) as e:
            raise CniError(BAD_CONTENT, "network config on stdin is not valid JSON", str(e)) from None
        if not isinstance(conf, dict):
            raise CniError(BAD_CONTENT, "network config on stdin must be a JSON object")
        version = conf.get("cniVersion")
        if not isinstance(version, str) or version not in SUPPORTED_VERSIONS:
            raise CniError(INCOMPATIBLE_VERSION, f"unsupported cniVersion {version!r}",
                           f"supported: {', '.join(SUPPORTED_VERSIONS)}")
        self.version, self.conf = version, conf
        name = conf.get("name")
        if name is not None and (not isinstance(name, str) or not NETWORK_NAME_RE.match(name)):
            raise CniError(INVALID_CONFIG, f"network name {name!r} is not a CNI network name",
                           "the spec's pattern: ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")

    def _env(self, name: str) -> str:
        value = self.env.get(name)
        if not value:
            raise CniError(INVALID_ENV, f"environment variable {name} is required")
        return value

    def need_version(self, minimum: str):
        if _version_key(self.version) < _version_key(minimum):
            raise CniError(INCOMPATIBLE_VERSION,
                           f"{self.command} needs cniVersion {minimum} or later, config has {self.version}")

    def field(self, name: str, kind, default=None):
        """A key of the config, checked for its type; null counts as absent."""
        value = self.conf.get(name)
        if value is None:
            return default
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise CniError(INVALID_CONFIG, f"network config key {name!r} must be a {kind.__name__}")
        return value

    def prev_result(self) -> dict:
        """prevResult, with the lists we extend checked for their shape."""
        prev = self.field("prevResult", dict, {})
        for key, kind in (("interfaces", dict), ("ips", dict), ("routes", dict)):
            items = prev.get(key, [])
            if not isinstance(items, list) or not all(isinstance(i, kind) for i in items):
                raise CniError(INVALID_CONFIG, f"prevResult.{key} must be a list of objects")
        if not isinstance(prev.get("dns", {}), dict):
            raise CniError(INVALID_CONFIG, "prevResult.dns must be an object")
        return prev

    @property
    def client(self) -> Client:
        socket = self.field("socket", str, DEFAULT_SOCKET)
        if not socket.startswith("/"):
            raise CniError(INVALID_CONFIG, "network config key 'socket' must be an absolute path")
        return Client(socket)

    def attachment(self) -> tuple[str, str]:
        container_id, ifname = self._env("CNI_CONTAINERID"), self._env("CNI_IFNAME")
        if not CONTAINER_ID_RE.match(container_id):
            raise CniError(INVALID_ENV, f"CNI_CONTAINERID {container_id!r}: letters, digits, "
                           "'_', '.' and '-', starting with a letter or digit")
        return container_id, ifname

    def netns(self) -> str:
        netns = self._env("CNI_NETNS")
        if not os.path.exists(netns):
            raise CniError(UNKNOWN_CONTAINER, f"network namespace {netns} does not exist")
        return netns

    def cni_args(self) -> dict[str, str]:
        """CNI_ARGS "K=V;K=V": IP and MAC are ours; others need IgnoreUnknown."""
        text = self.env.get("CNI_ARGS") or ""
        args = {}
        for pair in filter(None, text.split(";")):
            key, sep, value = pair.partition("=")
            if not sep:
                raise CniError(INVALID_ENV, f"CNI_ARGS: {pair!r} is not KEY=VALUE")
            args[key] = value
        ignore = args.pop("IgnoreUnknown", "").lower() in ("1", "true")
        unknown = sorted(k for k in args if k not in ("IP", "MAC") and not k.startswith("K8S_"))
        if unknown and not ignore:
            raise CniError(INVALID_ENV, f"CNI_ARGS: unknown key {unknown[0]!r} "
                           "(set IgnoreUnknown=1 to ignore it)")
        return args

    def bandwidth(self) -> dict | None:
        """The `bandwidth` capability (bits/s, bits) as the port's rate limits.
        CNI speaks for the pod: its ingress is what the switch sends to the
        pod (the port's egress), and the other way round."""
        bw = self.field("runtimeConfig", dict, {}).get("bandwidth")
        if bw is None:
            return None
        names = {"ingressRate": "egress_rate", "ingressBurst": "egress_burst",
                 "egressRate": "ingress_rate", "egressBurst": "ingress_burst"}
        if not isinstance(bw, dict) or set(bw) - set(names) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in bw.values()):
            raise CniError(INVALID_CONFIG, "runtimeConfig.bandwidth: ingressRate, ingressBurst, "
                           "egressRate, egressBurst as non-negative integers")
        return {names[k]: v for k, v in bw.items()}

    def pod(self) -> dict:
        """Who the pod is, for NetworkPolicy: its namespace and name from
        CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME, as kubelet's runtimes
        pass them), its labels from args.cni.labels or runtimeConfig.labels
        (a list of {"key", "value"}, as CNI's conventions have it, or an
        object) and its container port names from args.cni.namedPorts
        ({"http": 80, "dns": "UDP/53"}). The daemon validates them."""
        env = self.cni_args()
        args = self.field("args", dict, {}).get("cni") or {}
        runtime = self.field("runtimeConfig", dict, {})
        labels = runtime.get("labels") or (args.get("labels") if isinstance(args, dict) else None)
        if isinstance(labels, list):
            if not all(isinstance(x, dict) and set(x) == {"key", "value"} for x in labels):
                raise CniError(INVALID_CONFIG, "labels: a list of {\"key\", \"value\"} objects")
            labels = {x["key"]: x["value"] for x in labels}
        return {"namespace": env.get("K8S_POD_NAMESPACE"), "name": env.get("K8S_POD_NAME"),
                "labels": labels or {},
                "named_ports": (args.get("namedPorts") if isinstance(args, dict) else None) or {}}

    def static_requests(self) -> tuple[str | None, str | None]:
        """The address and MAC asked for, from runtimeConfig, args or CNI_ARGS."""
        runtime = self.field("runtimeConfig", dict, {})
        args = self.field("args", dict, {}).get("cni") or {}
        if not isinstance(args, dict):
            raise CniError(INVALID_CONFIG, "network config key args.cni must be an object")
        env = self.cni_args()
        ips = runtime.get("ips") or args.get("ips") or ([env["IP"]] if "IP" in env else [])
        mac = runtime.get("mac") or args.get("mac") or env.get("MAC")
        if not isinstance(ips, list) or not all(isinstance(i, str) for i in ips):
            raise CniError(INVALID_CONFIG, "requested ips must be a list of strings")
        versions = []
        for ip in ips:
            try:
                versions.append(ipaddress.ip_interface(ip).version)
            except ValueError:
                raise CniError(INVALID_CONFIG, f"requested address {ip!r} is not an IPv4 or "
                               "IPv6 address") from None
        if len(set(versions)) != len(versions):
            raise CniError(INVALID_CONFIG, "one address per family (IPv4, IPv6) and interface "
                           "can be requested")
        if mac is not None and not isinstance(mac, str):
            raise CniError(INVALID_CONFIG, "requested mac must be a string")
        return (",".join(ips) or None), mac


def _call(method, *args, **kwargs):
    """A daemon call, its failures turned into CNI errors."""
    try:
        return method(*args, **kwargs)
    except ClientError as e:
        if e.status is None:
            raise CniError(TRY_AGAIN, "vswitchd is not answering; try again later", str(e)) from None
        if e.status == 503:             # busy, or cannot allocate now: the daemon says why
            raise CniError(TRY_AGAIN, str(e)) from None
        raise CniError(KIND_CODES.get(e.kind or "", REFUSED), str(e)) from None


def _result(req: Request, att: dict, netns: str) -> dict:
    """The spec's result for our interface, after what prevResult already holds."""
    prev = req.prev_result()
    interfaces = list(prev.get("interfaces", []))
    iface = {"name": att["ifname"], "mac": att["mac"], "sandbox": netns}
    if _version_key(req.version) >= (1, 1, 0):
        iface["mtu"] = att["mtu"]
    ips = []
    for address, gateway, version in ((att["ip"], att["gateway"], "4"),
                                      (att.get("ip6"), att.get("gateway6"), "6")):
        if address:
            ip = {"address": address, "gateway": gateway, "interface": len(interfaces)}
            if _version_key(req.version) < (1, 0, 0):
                ip["version"] = version
            ips.append(ip)
    interfaces.append(iface)
    return {"cniVersion": req.version, "interfaces": interfaces,
            "ips": list(prev.get("ips", [])) + ips,
            "routes": list(prev.get("routes", [])) + att["routes"],
            "dns": req.field("dns", dict, None) or prev.get("dns") or {}}


def add(req: Request):
    container_id, ifname = req.attachment()
    netns = req.netns()
    ip, mac = req.static_requests()
    mtu = req.field("mtu", int)
    att = _call(req.client.attach, container_id, ifname, netns, network=req.field("network", str),
                cni_network=req.field("name", str, ""), ip=ip, mac=mac, mtu=mtu,
                rates=req.bandwidth(), pod=req.pod())
    return _result(req, att, netns)


def delete(req: Request):
    container_id, ifname = req.attachment()
    _call(req.client.detach, container_id, ifname)


def check(req: Request):
    req.need_version("0.4.0")
    container_id, ifname = req.attachment()
    netns = req.netns()
    prev = req.prev_result()
    if not prev:
        raise CniError(INVALID_CONFIG, "CHECK needs prevResult")
    att = _call(req.client.check_attachment, container_id, ifname, netns)
    mine = [i for i in prev.get("interfaces", []) if i.get("name") == ifname
            and i.get("sandbox") == netns]
    if not mine or mine[0].get("mac") != att["mac"]:
        raise CniError(CHECK_FAILED, f"prevResult has no interface {ifname} in {netns} "
                       f"with MAC {att['mac']}")
    for address in (att["ip"], att.get("ip6")):
        if address and address not in [i.get("address") for i in prev.get("ips", [])]:
            raise CniError(CHECK_FAILED, f"prevResult lacks address {address}")


def status(req: Request):
    req.need_version("1.1.0")
    try:
        nets = req.client.ipam(req.field("network", str))["networks"]
    except ClientError as e:
        raise CniError(NOT_READY, "vswitchd cannot attach pods now", str(e)) from None
    if nets[0]["free"] <= 0:
        raise CniError(NOT_READY, f"no free address left in network {nets[0]['name']!r}")


def gc(req: Request):
    req.need_version("1.1.0")
    valid = req.field("cni.dev/valid-attachments", list)
    if valid is None:
        raise CniError(INVALID_CONFIG, "GC needs cni.dev/valid-attachments")
    name = req.field("name", str)
    if not name:
        raise CniError(INVALID_CONFIG, "network config key 'name' is required for GC")
    _call(req.client.ipam_gc, name, valid)


COMMANDS = {"ADD": add, "DEL": delete, "CHECK": check, "STATUS": status, "GC": gc}


def run(environ, stdin_text: str | bytes) -> tuple[int, dict | None]:
    """(exit status, JSON to print) for one invocation."""
    version = LATEST
    try:
        req = Request(environ, stdin_text)
        version = req.version
        if req.command == "VERSION":
            return 0, {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}
        if req.command not in COMMANDS:
            raise CniError(INVALID_ENV, f"unknown CNI_COMMAND {req.command!r}")
        return 0, COMMANDS[req.command](req)
    except CniError as e:
        return 1, {"cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details}
    except Exception as e:      # never a traceback where the runtime expects the spec's JSON
        return 1, {"cniVersion": version, "code": REFUSED, "msg": LAST_RESORT,
                   "details": f"{type(e).__name__}: {e}"}


def main() -> int:
    code, out = run(os.environ, sys.stdin.buffer.read())
    if out is not None:
        print(json.dumps(out))
    return code


if __name__ == "__main__":
    sys.exit(main())

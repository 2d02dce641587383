"""Kubernetes NetworkPolicy (networking.k8s.io/v1) objects: read from the
manifests users already have, validated as the API server does (errors
name the field), and the label-selector semantics. Pure data: what the
objects mean for a node's pods is vswitch/policy.py's."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .errors import InvalidRequest

API_VERSION = "networking.k8s.io/v1"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"   # every namespace has it (Kubernetes 1.21+)
PROTOCOLS = {"TCP": 6, "UDP": 17, "SCTP": 132}
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")  # IANA_SVC_NAME


def bad(path: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {why}")


# ------------------------------------------------------------------ labels

def check_label_key(key, path: str) -> str:
    """A label key: [prefix/]name, as Kubernetes has it."""
    if not isinstance(key, str) or not key:
        raise bad(path, "a label key must be a non-empty string")
    prefix, _, name = key.rpartition("/")
    if (prefix and not DNS_SUBDOMAIN.match(prefix)) or not name or not LABEL_NAME.match(name):
        raise bad(path, f"{key!r} is not a valid label key")
    return key


def check_label_value(value, path: str) -> str:
    if not isinstance(value, str) or not LABEL_NAME.match(value):
        raise bad(path, f"{value!r} is not a valid label value (at most 63 letters, digits, "
                  "'-', '_' or '.', starting and ending with a letter or digit)")
    return value


def check_labels(labels, path: str) -> dict[str, str]:
    if not isinstance(labels, dict):
        raise bad(path, "must be an object of label keys and values")
    return {check_label_key(k, f"{path}.{k}"): check_label_value(v, f"{path}.{k}")
            for k, v in labels.items()}


def check_namespace(name, path: str = "namespace") -> str:
    if not isinstance(name, str) or not DNS_LABEL.match(name):
        raise bad(path, f"{name!r} is not a valid namespace name (a DNS label)")
    return name


def parse_label_changes(items: list[str]) -> tuple[dict[str, str], list[str]]:
    """`key=value` sets, `key-` removes (as kubectl label)."""
    sets, removes = {}, []
    for item in items:
        if not isinstance(item, str):
            raise InvalidRequest(f"label change {item!r} must be a string")
        if item.endswith("-") and "=" not in item:
            removes.append(check_label_key(item[:-1], item))
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidRequest(f"label change {item!r}: expected key=value or key-")
        sets[check_label_key(key, item)] = check_label_value(value, item)
    return sets, removes


@dataclass(frozen=True)
class Selector:
    """A LabelSelector: matchLabels and matchExpressions, all of them (an
    empty selector selects everything)."""
    labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, frozenset[str]], ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.labels):
            return False
        for key, op, values in self.expressions:
            present = key in labels
            if op == "In" and not (present and labels[key] in values) or \
                    op == "NotIn" and present and labels[key] in values or \
                    op == "Exists" and not present or \
                    op == "DoesNotExist" and present:
                return False
        return True

    @classmethod
    def parse(cls, obj, path: str) -> Selector:
        if obj is None:
            obj = {}
        _fields(obj, path, {"matchLabels", "matchExpressions"})
        labels = check_labels(obj.get("matchLabels") or {}, f"{path}.matchLabels")
        expressions = []
        exprs = obj.get("matchExpressions") or []
        if not isinstance(exprs, list):
            raise bad(f"{path}.matchExpressions", "must be a list")
        for i, e in enumerate(exprs):
            where = f"{path}.matchExpressions[{i}]"
            _fields(e, where, {"key", "operator", "values"})
            key = check_label_key(e.get("key"), f"{where}.key")
            op = e.get("operator")
            if op not in OPERATORS:
                raise bad(f"{where}.operator", f"{op!r} is not one of {', '.join(OPERATORS)}")
            values = e.get("values") or []
            if not isinstance(values, list):
                raise bad(f"{where}.values", "must be a list")
            if op in ("In", "NotIn") and not values:
                raise bad(f"{where}.values", f"must be non-empty for operator {op}")
            if op in ("Exists", "DoesNotExist") and values:
                raise bad(f"{where}.values", f"must be empty for operator {op}")
            expressions.append((key, op, frozenset(
                check_label_value(v, f"{where}.values[{j}]") for j, v in enumerate(values))))
        return cls(tuple(sorted(labels.items())), tuple(expressions))


# ------------------------------------------------------------------ policy

@dataclass(frozen=True)
class IpBlock:
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    excepts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@dataclass(frozen=True)
class Peer:
    """One element of from/to: an ipBlock, or pods by selectors (a missing
    namespaceSelector: the policy's own namespace)."""
    pods: Selector | None = None
    namespaces: Selector | None = None
    ip_block: IpBlock | None = None


@dataclass(frozen=True)
class Port:
    protocol: str
    port: int | str | None          # None: every port of the protocol; str: a named port
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    peers: tuple[Peer, ...]         # empty: every peer
    ports: tuple[Port, ...]         # empty: every port and protocol


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pods: Selector
    ingress: tuple[Rule, ...] | None   # None: not an ingress policy
    egress: tuple[Rule, ...] | None
    manifest: dict                     # as applied, for show and for etcd

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def types(self) -> list[str]:
        return [t for t, rules in (("Ingress", self.ingress), ("Egress", self.egress))
                if rules is not None]


def _fields(obj, path: str, known: set[str]):
    if not isinstance(obj, dict):
        raise bad(path, "must be an object")
    unknown = sorted(set(obj) - known)
    if unknown:
        raise bad(f"{path}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(known))})")


def _list(obj, path: str) -> list:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise bad(path, "must be a list")
    return obj


def _cidr(text, path: str):
    try:
        return ipaddress.ip_network(text, strict=False)
    except (ValueError, TypeError):
        raise bad(path, f"{text!r} is not a CIDR") from None


def _peer(obj, path: str) -> Peer:
    _fields(obj, path, {"podSelector", "namespaceSelector", "ipBlock"})
    if "ipBlock" in obj:
        if "podSelector" in obj or "namespaceSelector" in obj:
            raise bad(path, "ipBlock may not be combined with podSelector or namespaceSelector")
        block = obj["ipBlock"]
        _fields(block, f"{path}.ipBlock", {"cidr", "except"})
        if "cidr" not in block:
            raise bad(f"{path}.ipBlock.cidr", "required")
        cidr = _cidr(block["cidr"], f"{path}.ipBlock.cidr")
        excepts = []
        for i, text in enumerate(_list(block.get("except"), f"{path}.ipBlock.except")):
            ex = _cidr(text, f"{path}.ipBlock.except[{i}]")
            if ex.version != cidr.version or not ex.subnet_of(cidr) or ex == cidr:
                raise bad(f"{path}.ipBlock.except[{i}]",
                          f"{text} must be strictly within the cidr {cidr}")
            excepts.append(ex)
        return Peer(ip_block=IpBlock(cidr, tuple(excepts)))
    if "podSelector" not in obj and "namespaceSelector" not in obj:
        raise bad(path, "must specify a peer: podSelector, namespaceSelector or ipBlock")
    return Peer(Selector.parse(obj["podSelector"], f"{path}.podSelector")
                if "podSelector" in obj else None,
                Selector.parse(obj["namespaceSelector"], f"{path}.namespaceSelector")
                if "namespaceSelector" in obj else None)


def _port(obj, path: str) -> Port:
    _fields(obj, path, {"protocol", "port", "endPort"})
    protocol = obj.get("protocol") or "TCP"
    if protocol not in PROTOCOLS:
        raise bad(f"{path}.protocol", f"{protocol!r} is not TCP, UDP or SCTP")
    port, end = obj.get("port"), obj.get("endPort")
    if isinstance(port, str):
        if not PORT_NAME.match(port):
            raise bad(f"{path}.port", f"{port!r} is neither a port number nor a port name "
                      "(1-15 lowercase letters, digits and '-', with a letter)")
    elif port is not None and (not isinstance(port, int) or isinstance(port, bool)
                               or not 1 <= port <= 65535):
        raise bad(f"{path}.port", f"{port!r} must be 1..65535 or a port name")
    if end is not None:
        if not isinstance(port, int):
            raise bad(f"{path}.endPort", "needs a numeric port")
        if not isinstance(end, int) or isinstance(end, bool) or not port <= end <= 65535:
            raise bad(f"{path}.endPort", f"{end!r} must be {port}..65535")
    return Port(protocol, port, end)


def _rules(obj, path: str, peers_key: str) -> tuple[Rule, ...]:
    rules = []
    for i, rule in enumerate(_list(obj, path)):
        where = f"{path}[{i}]"
        if rule is None:
            rule = {}
        _fields(rule, where, {peers_key, "ports"})
        peers = tuple(_peer(p, f"{where}.{peers_key}[{j}]")
                      for j, p in enumerate(_list(rule.get(peers_key), f"{where}.{peers_key}")))
        ports = tuple(_port(p, f"{where}.ports[{j}]")
                      for j, p in enumerate(_list(rule.get("ports"), f"{where}.ports")))
        rules.append(Rule(peers, ports))
    return tuple(rules)


def parse(obj) -> NetworkPolicy:
    """A NetworkPolicy from its manifest (a dict); InvalidRequest names the
    field that is wrong."""
    if not isinstance(obj, dict):
        raise InvalidRequest("a manifest must be an object")
    kind, version = obj.get("kind"), obj.get("apiVersion")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    what = f"NetworkPolicy {name}" if isinstance(name, str) else "NetworkPolicy"
    if kind != "NetworkPolicy":
        raise bad("kind", f"{kind!r}: only NetworkPolicy objects (or a List of them) are taken")
    if version != API_VERSION:
        raise bad(f"{what}: apiVersion", f"{version!r} is not {API_VERSION}")
    if not isinstance(meta, dict):
        raise bad(f"{what}: metadata", "required")
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name):
        raise bad(f"{what}: metadata.name", f"{name!r} is not a valid name (a DNS subdomain)")
    namespace = check_namespace(meta.get("namespace") or "default",
                                f"{what}: metadata.namespace")
    spec = obj.get("spec")
    try:
        _fields(spec, "spec", {"podSelector", "policyTypes", "ingress", "egress"})
        assert isinstance(spec, dict)
        pods = Selector.parse(spec.get("podSelector"), "spec.podSelector")
        types = spec.get("policyTypes")
        if types is None:
            # The API's default: Ingress, and Egress when there are egress rules.
            types = ["Ingress"] + (["Egress"] if spec.get("egress") is not None else [])
        types = _list(types, "spec.policyTypes")
        for i, t in enumerate(types):
            if t not in ("Ingress", "Egress"):
                raise bad(f"spec.policyTypes[{i}]", f"{t!r} is not Ingress or Egress")
        ingress = _rules(spec.get("ingress"), "spec.ingress", "from")
        egress = _rules(spec.get("egress"), "spec.egress", "to")
    except InvalidRequest as e:
        raise InvalidRequest(f"{what} in {namespace}: {e}") from None
    manifest = {"apiVersion": API_VERSION, "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return NetworkPolicy(namespace, name, pods, ingress if "Ingress" in types else None,
                         egress if "Egress" in types else None, manifest)


def documents(objs) -> list[dict]:
    """The manifests in what a user applies: objects, and the items of
    `List` objects (as kubectl writes them)."""
    out = []
    for obj in objs if isinstance(objs, list) else [objs]:
        if isinstance(obj, dict) and obj.get("kind", "").endswith("List") \
                and isinstance(obj.get("items"), list):
            out += obj["items"]
        elif obj is not None:
            out.append(obj)
    return out

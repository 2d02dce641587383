"""One vocabulary, and layers that hold: shared facts are written once
(protocol.py) and agree with the data plane's C declarations; clients never
load the daemon; only datapath.py touches the C extension."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from vswitch import protocol

PACKAGE = Path(__file__).resolve().parents[2] / "vswitch"


def enum_names(pxd: str, prefix: str) -> list[str]:
    return re.findall(rf"^\s+{prefix}([A-Z0-9_]+)\b", (PACKAGE / pxd).read_text(), re.M)


def test_drop_names_follow_the_data_planes_enum():
    names = [n.lower() for n in enum_names("_counters.pxd", "DROP_")]
    assert names == list(protocol.DROP_NAMES)


def test_capture_points_are_the_data_planes():
    text = (PACKAGE / "_capture.pxd").read_text()
    bits = {name.lower(): int(value) for name, value in
            re.findall(r"^\s+CAP_(INGRESS|EGRESS|ENCAP|DECAP|DROP) = (\d+)", text, re.M)}
    assert bits == protocol.CAPTURE_POINTS


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
            found.update("." * node.level + a.name for a in node.names if not node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_only_the_datapath_boundary_imports_the_extension():
    importers = sorted(p.name for p in PACKAGE.glob("*.py")
                       if any(m.endswith("_fastpath") for m in imports(p)))
    assert importers == ["datapath.py"]


def test_protocol_and_verbs_import_nothing_of_vswitch():
    for module in ("protocol.py", "verbs.py"):
        assert not [m for m in imports(PACKAGE / module) if m.startswith((".", "vswitch"))]


def test_every_verb_is_served_called_and_commanded_from_its_one_declaration():
    from vswitch import ctl
    from vswitch.api import Api
    from vswitch.client import Client
    from vswitch.verbs import VERBS

    routes = [v.route for v in VERBS]
    assert len(set(routes)) == len(routes)
    for verb in VERBS:
        assert callable(getattr(Api, verb.name)), verb.name
        assert callable(getattr(Client(), verb.name)), verb.name
        if verb.cli and verb.name != "capture":
            assert verb.name in ctl.RENDER, verb.name
    parsed = ctl.build_parser().parse_args(["fdb", "del", "02:00:00:00:00:01", "--network",
                                            "n1"])
    assert parsed.call == "fdb_del"
    path, query, body = VERBS[[v.name for v in VERBS].index("fdb_del")].request(
        ("02:00:00:00:00:01", "n1"), {})
    assert (path, query, body) == ("fdb/02%3A00%3A00%3A00%3A00%3A01", {"network": "n1"}, None)


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('vswitch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_clients_never_load_the_daemon():
    loaded = loaded_after("import vswitch.ctl, vswitch.cni")
    assert loaded <= {"vswitch", "vswitch.protocol", "vswitch.verbs", "vswitch.client",
                      "vswitch.ctl", "vswitch.cni", "vswitch.pcap"}, loaded


def test_the_daemon_never_loads_the_cni_plugin():
    loaded = loaded_after("import vswitch.daemon")
    assert "vswitch.datapath" in loaded and "vswitch.cni" not in loaded


def test_capture_records_cross_the_socket_intact(tmp_path):
    """The daemon's framing (protocol.capture_chunks) read back by the client."""
    import json
    import socket
    import threading

    from vswitch.client import Client

    records = [({"port": "pod-a", "point": "ingress"}, b"\x01" * 60),
               ({"port": "vxlan", "point": "drop"}, b"")]
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def answer():
        conn, _ = server.accept()
        # The whole request first: the client sends its head and body apart,
        # and closing before the body arrived would break its pipe.
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(65536)
        head, _, got = request.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(got) < length:
            got += conn.recv(65536)
        body = b"".join(protocol.capture_chunks(json.dumps(m).encode(), d) for m, d in records)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Connection: close\r\n\r\n" + body)
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    try:
        assert list(Client(path, timeout=5).capture(point="ingress")) == records
    finally:
        t.join(5)
        server.close()


def test_port_counters_are_the_data_planes():
    from datapath_rig import Rig
    rig = Rig()
    assert tuple(rig.dp.port_counters(rig.port())) == protocol.PORT_COUNTERS

"""Classic BPF programs (as a capture filter is compiled to) run over
frames by the data plane's interpreter."""

import atheris
from rig import FuzzRig

rig: FuzzRig


def setup():
    global rig
    rig = FuzzRig()
    rig.dp.capture_remove(rig.capture)


def one_input(data: bytes):
    fdp = atheris.FuzzedDataProvider(data)
    program = [(fdp.ConsumeIntInRange(0, 0xFFFF), fdp.ConsumeIntInRange(0, 255),
                fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 0xFFFFFFFF))
               for _ in range(fdp.ConsumeIntInRange(0, 64))]
    try:
        session = rig.dp.capture_add(31, -1, fdp.ConsumeIntInRange(0, 70000), program)
    except ValueError:                  # a jump out of the program: refused up front
        return
    try:
        rig.from_port(fdp.ConsumeIntInRange(0, 7), fdp.ConsumeBytes(4000))
        rig.dp.capture_read()
    finally:
        rig.dp.capture_remove(session)
        rig.flush()


def seeds() -> list[bytes]:
    import subprocess
    out = []
    for expr in ("icmp or arp", "tcp port 80 and host 198.18.0.1", "vlan and udp", "ip6"):
        r = subprocess.run(["tcpdump", "-ddd", "-y", "EN10MB", "--", expr], capture_output=True,
                           text=True)
        lines = r.stdout.split("\n")
        insns = [tuple(int(x) for x in line.split()) for line in lines[1:1 + int(lines[0])]]
        out.append(bytes([len(insns)]) + b"".join(
            c.to_bytes(2, "little") + bytes([jt, jf]) + k.to_bytes(4, "little")
            for c, jt, jf, k in insns) + bytes(64))
    return out

"""Writes random records under every prefix of vswitch's etcd schema, as a
hostile or broken writer could: any JSON shape, wrong types in every
field, keys with too few or too many parts, nesting far past what a JSON
parser recurses into, and a block record of a live node's block turned
into a list. Run as `python3 etcd_fuzz_writer.py ENDPOINT SEED COUNT
[LIVE_BLOCK_KEY]` (in the namespace that reaches etcd); prints how many it wrote."""

import asyncio
import json
import random
import sys

from vswitch.etcd import Etcd

KINDS = ("networks", "nodes", "endpoints", "blocks", "graves", "policies", "namespaces")
FIELDS = ("node", "mac", "vtep", "vni", "subnet", "subnet6", "block_size", "gateway", "mtu",
          "labels", "spec", "metadata", "kind", "apiVersion", "lease", "since", "until", "ips")
DEEP = (b"[" * 100000 + b"]" * 100000, b'{"a":' * 100000 + b"1" + b"}" * 100000)


def value(rnd: random.Random, depth: int = 0):
    choice = rnd.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rnd.choice([True, False])
    if choice == 2:
        return rnd.choice([0, -1, 2 ** 63, 1.5, 100, 4095])
    if choice == 3:
        return rnd.choice(["", "x", "198.18.250.1", "02:00:00:00:00:01", "::1", "10.0.0.0/8",
                           "fz-node", "\u00e9\u0000", "a" * 300])
    if choice in (4, 5):
        return rnd.choice([[], {}, "[]"])
    if choice in (6, 7):
        return {rnd.choice(FIELDS): value(rnd, depth + 1) for _ in range(rnd.randrange(5))}
    return [value(rnd, depth + 1) for _ in range(rnd.randrange(4))]


def key(rnd: random.Random) -> str:
    kind = rnd.choice(KINDS)
    parts = {"networks": ["fuzz"], "nodes": ["fz-node"], "graves": ["fz-node"],
             "endpoints": ["blue", f"198.18.250.{rnd.randrange(256)}"],
             "blocks": ["fuzz", "198.18.250.0-26"], "policies": ["fz", "p"],
             "namespaces": ["fz"]}[kind]
    parts = parts[:rnd.randrange(len(parts) + 1)] + ["x"] * rnd.choice([0, 0, 0, 1])
    return "/vswitch/" + "/".join([kind, *parts]) + str(rnd.randrange(50))


async def main(endpoint: str, seed: int, count: int, live_block: str | None):
    rnd = random.Random(seed)
    etcd = Etcd([endpoint])
    await etcd.connect()
    writes = [(key(rnd), json.dumps(value(rnd)).encode()) for _ in range(count)]
    writes += [(key(rnd), deep) for deep in DEEP for _ in range(2)]
    if live_block:
        writes += [(live_block, b"[1, 2]"), (live_block, b'"held"')]
    for k, v in writes:
        await etcd.put(k, v)
    await etcd.close()
    print(len(writes))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                     sys.argv[4] if len(sys.argv) > 4 else None))

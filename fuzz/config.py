"""TOML configs: every file is a config or one ConfigError naming a key."""

import tomllib

from vswitch.config import ConfigError, parse


def setup():
    pass


def one_input(data: bytes):
    try:
        document = tomllib.loads(data.decode("utf-8", "replace"))
    except tomllib.TOMLDecodeError:
        return
    try:
        parse(document)
    except ConfigError:
        pass


def seeds() -> list[bytes]:
    return [b'[node]\nname = "a"\nmode = "overlay"\n[overlay]\nvtep_ip = "192.0.2.1"\n'
            b'peers = ["192.0.2.2"]\nlearn_peers = true\n[[network]]\nname = "blue"\nvni = 7\n'
            b'subnet = "198.18.0.0/16"\nblock = "198.18.1.0/24"\nmtu = 1400\nhost_port = "h0"\n'
            b'[fdb]\nmax_per_port = 10\n[[hook]]\ncall = "os:getcwd"\npoint = ["drop"]\n',
            b'[metrics]\nlisten = "127.0.0.1:9477"\n[datapath]\nbatch = 8\n']

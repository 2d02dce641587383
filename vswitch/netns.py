"""Network namespaces: find one by name or path, and let the calling
thread step into it (setns affects only that thread), e.g. to open a
socket that then stays bound to the namespace."""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsNotFound(LookupError):
    pass


def netns_path(netns: str) -> str:
    """Path of a namespace given by name (`ip netns` style) or by path."""
    path = netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)
    if not os.path.exists(path):
        raise NetnsNotFound(f"network namespace {netns!r} not found ({path})")
    return path


def netns_id(netns: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the namespace a name or path refers to now; None
    if there is none. Tells a namespace from a new one at the same path."""
    try:
        st = os.stat(netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns))
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _setns(fd: int):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered(netns: str):
    """Run the body with this thread inside `netns`, then come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path(netns), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)

"""Network namespaces: find one by name or path, and let the calling
thread step into it (setns affects only that thread), e.g. to open a
socket that then stays bound to the namespace.

A namespace is named as `ip netns` does (NAME, /run/netns/NAME,
/var/run/netns/NAME) or by a process (/proc/PID/ns/net); nothing else is
accepted, and never the daemon's own namespace: a request must not make a
pod interface (and its default route) in the node's namespace. A namespace
is opened once and used through that file descriptor, so that the path
cannot be swapped between a check and its use; its identity (device,
inode) tells it from a later namespace at the same path."""

from __future__ import annotations

import ctypes
import os
import re
from contextlib import contextmanager

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"
_PATH_RE = re.compile(rf"^(?:/var)?/run/netns/{_NAME}$|^/proc/[1-9][0-9]*(?:/task/[1-9][0-9]*)?/ns/net$")
_NAME_RE = re.compile(rf"^{_NAME}$")


class NetnsError(ValueError):
    """A namespace name or path that is not acceptable."""


class NetnsNotFound(LookupError):
    pass


def netns_path(netns: str) -> str:
    """Path of a namespace given by name (`ip netns` style) or by path."""
    if not isinstance(netns, str) or not (_NAME_RE.match(netns) or _PATH_RE.match(netns)):
        raise NetnsError(f"bad network namespace {netns!r}: a name as `ip netns` makes it, "
                         "/run/netns/NAME or /proc/PID/ns/net")
    path = netns if "/" in netns else os.path.join(NETNS_RUN_DIR, netns)
    if not os.path.exists(path):
        raise NetnsNotFound(f"network namespace {netns!r} not found ({path})")
    return path


def open_netns(netns: str) -> int:
    """An O_RDONLY fd of the namespace, checked to be a network namespace
    other than ours. The caller closes it."""
    path = netns_path(netns)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFound(f"network namespace {netns!r} not found ({path})") from None
    try:
        st, own = os.fstat(fd), os.stat("/proc/self/ns/net")
        if st.st_dev != own.st_dev:         # every namespace file lives on nsfs
            raise NetnsError(f"{path} is not a network namespace")
        if st.st_ino == own.st_ino:
            raise NetnsError(f"{path} is vswitchd's own network namespace, not a pod's")
    except BaseException:
        os.close(fd)
        raise
    return fd


def fd_identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


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
def entered(netns: str | int):
    """Run the body with this thread inside `netns` (a name, a path, or
    an fd from open_netns), then come back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if isinstance(netns, int):
            _setns(netns)
        else:
            target = open_netns(netns)
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

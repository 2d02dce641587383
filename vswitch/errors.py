"""The errors a request to vswitch can end in, one hierarchy for the whole
daemon. Each says what went wrong, not how to report it: the API maps the
classes to HTTP statuses (httpd.HTTP_STATUS), the CNI plugin maps `kind`
(carried in the API's answer) to CNI error codes (cni.KIND_CODES)."""

from __future__ import annotations

from .protocol import ErrorKind


class VswitchError(Exception):
    """A request that cannot be satisfied. kind: an optional word for
    programs (the CNI plugin), e.g. "unknown_network", "exhausted"."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


class InvalidRequest(VswitchError):
    """Malformed or out-of-range input."""


class NotFound(VswitchError):
    """What the request names does not exist."""


class NamespaceGone(NotFound):
    """The pod's namespace does not exist (any more), or a different one is
    at its path now."""


class Conflict(VswitchError):
    """Clashes with what exists (a name, an address, a MAC, a port's state)."""


class CheckFailed(Conflict):
    """A CNI CHECK found the attachment not as it was made."""

    def __init__(self, message: str):
        super().__init__(message, kind=ErrorKind.CHECK)


class Busy(VswitchError):
    """Another request holds what this one needs, or a limit of concurrent
    work is reached: try again."""


class Refused(VswitchError):
    """A service the node depends on (etcd) refused the request for good:
    trying again will not help."""


class Exhausted(VswitchError):
    """A table or an address block is full (version: the address family
    that ran out, when it is addresses)."""

    def __init__(self, message: str, kind: str | None = None, version: int | None = None):
        super().__init__(message, kind)
        self.version = version


class Unsupported(VswitchError):
    """This node lacks what the request needs (e.g. tcpdump for filters)."""


class DeviceError(VswitchError):
    """The kernel refused to make or configure an interface."""


class ReloadRefused(VswitchError):
    """A new config changes what only a restart can; the running one stays."""

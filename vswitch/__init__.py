"""vswitch: a userspace virtual switch for Kubernetes pod networking."""

__version__ = "0.1.0"

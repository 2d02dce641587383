"""Python capture hooks: callables named in the config ([[hook]] call =
"module:function" or "/path/file.py:function") that receive frames from
capture points, e.g. scapy-based debugging scripts.

A hook is called as hook(point, port, frame_bytes, metadata) in a worker
thread of its own, fed through a bounded queue: the fast path only copies
matching frames into the capture ring, a full queue loses records (counted
as hook_dropped), and a hook that raises is logged once and disabled.

Hook code runs as root inside the daemon, so its file must be as safe as
the daemon's own: owned by root (or the daemon's user), and neither it nor
any directory above it writable by anyone else (a sticky directory such as
/tmp excepted, as OpenSSH's rule for its files has it). A hook that cannot
be loaded is logged, listed as disabled with the reason, and the daemon
runs without it: every pod of the node depends on the daemon, not on a
debugging script.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import logging
import os
import queue
import stat
import threading
from dataclasses import dataclass, field
from typing import Callable

from .capture import Captures, Record
from .config import ConfigError, HookConfig
from .errors import VswitchError

log = logging.getLogger("vswitch.hooks")

QUEUE_SIZE = 1024


class UnsafeHook(Exception):
    pass


def check_owner(path: str):
    """UnsafeHook unless path and every directory above it belong to root
    (or us) and no one else may write to them (sticky directories aside)."""
    path = os.path.realpath(path)
    while True:
        st = os.stat(path)
        if st.st_uid not in (0, os.geteuid()):
            raise UnsafeHook(f"{path} is owned by uid {st.st_uid}, not root")
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky_dir:
            raise UnsafeHook(f"{path} is writable by group or others")
        if path == "/":
            return
        path = os.path.dirname(path)


def load_callable(spec: str) -> Callable:
    """ "package.module:function" or "/path/to/file.py:function", from a
    file that passes check_owner."""
    where, _, name = spec.rpartition(":")
    if where.endswith(".py"):
        check_owner(where)
        module_spec = importlib.util.spec_from_file_location(f"vswitch_hook_{abs(hash(where))}",
                                                             where)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load {where}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        found = importlib.util.find_spec(where)
        if found is None:
            raise ImportError(f"no module named {where!r}")
        if found.origin and os.path.exists(found.origin):
            check_owner(found.origin)
        module = importlib.import_module(where)
    fn = getattr(module, name)
    if not callable(fn):
        raise TypeError(f"{spec} is not callable")
    return fn


@dataclass
class Hook:
    index: int
    config: HookConfig
    fn: Callable | None      # None: it could not be loaded
    session: int = -1
    enabled: bool = True
    calls: int = 0
    dropped: int = 0
    error: str | None = None
    queue: queue.Queue = field(default_factory=lambda: queue.Queue(QUEUE_SIZE))
    thread: threading.Thread | None = None


class Hooks:
    def __init__(self, captures: Captures, configs: tuple[HookConfig, ...]):
        self.captures = captures
        self.hooks: list[Hook] = []
        for i, cfg in enumerate(configs):
            try:
                self.hooks.append(Hook(i, cfg, load_callable(cfg.call)))
            except Exception as e:
                log.error("hook[%d].call: cannot load %r, running without it: %s", i, cfg.call, e)
                self.hooks.append(Hook(i, cfg, None, enabled=False,
                                       error=f"cannot load: {type(e).__name__}: {e}"))

    async def start(self):
        loop = asyncio.get_running_loop()
        for hook in self.hooks:
            if not hook.enabled:
                continue
            try:
                hook.session = await self.captures.open(
                    functools.partial(self._offer, hook), hook.config.points, None,
                    hook.config.filter)
            except VswitchError as e:
                raise ConfigError(f"hook[{hook.index}].filter", str(e)) from None
            hook.thread = threading.Thread(target=self._run, args=(hook, loop),
                                           name=f"hook-{hook.index}", daemon=True)
            hook.thread.start()
            log.info("hook %d: %s on %s", hook.index, hook.config.call,
                     ", ".join(hook.config.points or ["all points"]))

    def _offer(self, hook: Hook, record: Record):
        if not hook.enabled or (hook.config.port and record.port != hook.config.port):
            return
        try:
            hook.queue.put_nowait(record)
        except queue.Full:
            hook.dropped += 1

    def _run(self, hook: Hook, loop: asyncio.AbstractEventLoop):
        while (record := hook.queue.get()) is not None:
            try:
                assert hook.fn is not None          # hooks that did not load have no thread
                hook.fn(record.point, record.port, record.data, record.meta())
                hook.calls += 1
            except Exception as e:
                hook.enabled, hook.error = False, f"{type(e).__name__}: {e}"
                log.exception("hook %d (%s) raised; disabled", hook.index, hook.config.call)
                loop.call_soon_threadsafe(self.captures.close, hook.session)
                return

    def close(self):
        for hook in self.hooks:
            if hook.enabled:
                self.captures.close(hook.session)
            hook.enabled = False
            try:
                hook.queue.put_nowait(None)
            except queue.Full:
                pass
        for hook in self.hooks:
            if hook.thread:
                hook.thread.join(2)

    def stats(self) -> list[dict]:
        return [{"call": h.config.call, "enabled": h.enabled, "calls": h.calls,
                 "dropped": h.dropped, "error": h.error} for h in self.hooks]

#!/usr/bin/env python3
"""How long a vswitchd restart takes pods off the network.

Two pods on one vswitchd exchange pings every millisecond while vswitchd is
stopped and started again, the way `systemctl restart` does it (SIGTERM,
then a new process on the same state), and once killed with SIGKILL and
started again (a crash and Restart=on-failure, without systemd's RestartSec
delay). The pods keep their persistent TAPs throughout; the outage is what
the longest silence between two ping replies. Run as root:
    python3 bench/restart.py [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from topology import ADDR_A, ADDR_B, PLEN, namespaces, sh

INTERVAL = 0.001      # seconds between pings


def start_daemon(config: str, log) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "vswitch.daemon", "--config", config],
                            stderr=log)
    return proc


def wait_ready(ctl: list[str], deadline: float = 20):
    end = time.monotonic() + deadline
    while subprocess.run(ctl + ["status"], capture_output=True).returncode != 0:
        if time.monotonic() > end:
            raise RuntimeError("vswitchd did not come up")
        time.sleep(0.01)


def one_restart(pod_a: str, ctl: list[str], proc, config: str, log, how: str):
    """(lost pings, outage in ms, stop-to-answering time in ms)."""
    output = tempfile.TemporaryFile("w+")     # a pipe would fill up and stall ping
    pinger = subprocess.Popen(["ip", "netns", "exec", pod_a, "ping", "-D", "-i", str(INTERVAL),
                               "-W", "1", ADDR_B], stdout=output, text=True)
    time.sleep(1)
    t0 = time.monotonic()
    if how == "sigkill":
        proc.kill()
    else:
        proc.send_signal(signal.SIGTERM)
    proc.wait()
    proc = start_daemon(config, log)
    wait_ready(ctl)
    answering = time.monotonic() - t0
    time.sleep(1.5)
    pinger.send_signal(signal.SIGINT)
    pinger.wait()
    output.seek(0)
    out = output.read()
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", out).groups())
    # The outage: the longest silence between two replies (ping also stops
    # counting requests it could not send while the pod's TAP had no carrier).
    replies = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]
    gap = max(b - a for a, b in zip(replies, replies[1:]))
    return proc, {"lost": sent - received, "outage_ms": gap * 1000,
                  "restart_ms": answering * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (it creates namespaces and TAP devices)")
    results = {"sigterm": [], "sigkill": []}
    with namespaces("ra", "rb") as (a, b), tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "vswitchd.toml")
        sock = os.path.join(tmp, "vswitchd.sock")
        with open(config, "w") as f:
            f.write(f'[node]\nsocket = "{sock}"\nstate_dir = "{tmp}/state"\n'
                    '[[network]]\nname = "bench"\nvni = 1\nsubnet = "198.18.0.0/16"\n')
        ctl = [sys.executable, "-m", "vswitch.ctl", "--socket", sock]
        log = open(os.path.join(tmp, "vswitchd.log"), "w")
        proc = start_daemon(config, log)
        wait_ready(ctl)
        sh(*ctl, "port", "add", "a", "--netns", a, "--ip", f"{ADDR_A}/{PLEN}")
        sh(*ctl, "port", "add", "b", "--netns", b, "--ip", f"{ADDR_B}/{PLEN}")
        try:
            for how in ("sigterm", "sigkill"):
                for _ in range(args.rounds):
                    proc, r = one_restart(a, ctl, proc, config, log, how)
                    results[how].append(r)
        finally:
            subprocess.run(ctl + ["stop", "--remove-ports"], capture_output=True)
            proc.wait(10)
    print(f"restart outage, pings every {INTERVAL * 1000:g} ms between two pods")
    print(f"{'how':10} {'lost pings':>12} {'outage ms':>10} {'back in ms':>11}")
    for how, rows in results.items():
        for r in rows:
            print(f"{how:10} {r['lost']:>12} {r['outage_ms']:>10.0f} {r['restart_ms']:>11.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The fast path's per-frame work without syscalls under pytest-benchmark:
each Cython function next to the same logic in pure Python and in scapy
(bench/micro.py holds them all and prints the ratios). No thresholds: these
are measurements. Run:
    python3 -m pytest bench/test_micro_benchmark.py --benchmark-columns=mean,stddev,rounds
"""

from __future__ import annotations

import socket
import time

import micro
import pytest

FRAMES = 2_000


@pytest.fixture(scope="module")
def pipeline():
    """A Datapath with one port and 100k MACs learned, and frames among them."""
    dp = micro.bench_datapath(fdb_max_entries=200_000)
    dp.set_network(1, 1, 1500)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    port = dp.add_port(ours.fileno(), 1)
    micro.learn_all(dp, port, 100_000)
    yield dp, port, micro.frames_for(100_000, FRAMES)
    ours.close(), theirs.close()


def test_pipeline_cython(benchmark, pipeline):
    dp, port, frames = pipeline
    benchmark(micro.pipeline_cost, dp, port, frames, micro.FRAME_LEN)


def test_pipeline_python(benchmark):
    fdb = {micro.mac(i): (0, time.monotonic_ns()) for i in range(100_000)}
    benchmark(micro.python_pipeline, micro.frames_for(100_000, FRAMES), fdb, 0, time.monotonic_ns())


FLOWS = micro.flow_frames(FRAMES)
DATAGRAMS = micro.vxlan_datagrams(FLOWS)
DLEN = micro.FRAME_LEN + 8
SUPERFRAME = micro.superframe()


@pytest.mark.parametrize("impl", ["cython", "python", "scapy"])
def test_encap(benchmark, impl):
    dp = micro.tunnel_dp()
    fn = {"cython": lambda: micro.encap_cost(dp, 1, FLOWS, micro.FRAME_LEN),
          "python": lambda: micro.python_encap(FLOWS),
          "scapy": lambda: micro.scapy_encap(FLOWS[:100 * micro.FRAME_LEN])}[impl]
    benchmark(fn)


@pytest.mark.parametrize("impl", ["cython", "python", "scapy"])
def test_decap(benchmark, impl):
    dp = micro.tunnel_dp()
    fn = {"cython": lambda: micro.decap_cost(dp, micro.PEER_IP, DATAGRAMS, DLEN)[1],
          "python": lambda: micro.python_decap(DATAGRAMS, DLEN),
          "scapy": lambda: micro.scapy_decap(DATAGRAMS[:100 * DLEN], DLEN)}[impl]
    assert fn() > 0                       # every datagram is accepted
    benchmark(fn)


@pytest.mark.parametrize("impl", ["cython", "python", "scapy"])
def test_segmentation(benchmark, impl):
    fn = {"cython": lambda: micro.segment_cost(SUPERFRAME)[1],
          "python": lambda: micro.python_segment(SUPERFRAME),
          "scapy": lambda: micro.scapy_segment(SUPERFRAME)}[impl]
    assert fn() == 47                     # 65,000 bytes in 1,398-byte segments
    benchmark(fn)

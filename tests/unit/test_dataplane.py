"""The data plane's switching rules, run against the C code on socketpairs
(datapath_rig.Rig) and against the Python model (dataplane_model.Model)
alike, as aiohttp runs its parser tests over its C and Python parsers."""

from __future__ import annotations

import pytest
from datapath_rig import BCAST, Rig, frame, mac
from dataplane_model import Model
from hypothesis import given, settings
from hypothesis import strategies as st


def decisions(sw) -> dict:
    if isinstance(sw, Model):
        return sw.decisions()
    c = sw.dp.counters()
    return {"unicast": c["unicast"], "flooded": c["flooded"],
            "drops": {k: v for k, v in c["drops"].items() if v}}


@pytest.fixture(params=["c", "c-3-workers", "model"])
def sw(request):
    if request.param == "model":
        yield Model()
        return
    rig = Rig(workers=3 if request.param == "c-3-workers" else 1)
    yield rig
    rig.close()


def test_unknown_unicast_floods_within_its_network_only(sw):
    a, b, c = sw.port(1), sw.port(1), sw.port(1)
    other = sw.port(2)
    f = frame(mac(9), mac(1))
    sw.send(a, f)
    assert sw.received(b) == [f] and sw.received(c) == [f]
    assert sw.received(a) == [] and sw.received(other) == []
    assert decisions(sw)["flooded"] == 1


def test_a_learned_mac_gets_unicast(sw):
    a, b, c = sw.port(), sw.port(), sw.port()
    sw.send(b, frame(BCAST, mac(2)))
    for p in (a, c):
        sw.received(p)
    f = frame(mac(2), mac(1))
    sw.send(a, f)
    assert sw.received(b) == [f] and sw.received(c) == []
    assert decisions(sw)["unicast"] == 1


def test_a_mac_that_moves_is_followed(sw):
    a, b, c = sw.port(), sw.port(), sw.port()
    sw.send(b, frame(BCAST, mac(2)))
    sw.send(c, frame(BCAST, mac(2)))              # the pod moved to port c
    for p in (a, b, c):
        sw.received(p)
    sw.send(a, frame(mac(2), mac(1)))
    assert len(sw.received(c)) == 1 and sw.received(b) == []


@pytest.mark.parametrize("bad, reason", [
    (b"\x02\x00\x00", "runt"),
    (BCAST + mac(1) + b"\x81\x00\x00", "runt"),                  # a tag cut short
    (frame(mac(2), BCAST), "bad_source"),
    (frame(mac(2), mac(1), payload=bytes(1501)), "oversize"),
], ids=["short", "short-tag", "multicast-source", "over-mtu"])
def test_bad_frames_are_dropped_by_reason(sw, bad, reason):
    a, b = sw.port(), sw.port()
    sw.send(a, bad)
    assert sw.received(b) == []
    assert decisions(sw)["drops"] == {reason: 1}


def test_a_frame_for_the_ingress_port_is_a_loop(sw):
    a, b = sw.port(), sw.port()
    sw.send(a, frame(BCAST, mac(1)))
    sw.received(b)
    sw.send(a, frame(mac(1), mac(3)))
    assert decisions(sw)["drops"] == {"loop": 1}


def test_alone_in_a_network_is_no_route(sw):
    a = sw.port(1)
    sw.port(2)
    sw.send(a, frame(BCAST, mac(1)))
    assert decisions(sw)["drops"] == {"no_route": 1}


# A random conversation: both deliver the same frames to the same ports and
# count the same, frame after frame.
conversations = st.lists(st.tuples(
    st.integers(0, 3),                              # ingress port (ports 0-2 in network 1, 3 in 2)
    st.sampled_from([1, 2, 3, 4, 0xFFFF]),          # destination MAC (0xFFFF: broadcast)
    st.integers(1, 4),                              # source MAC
    st.sampled_from([0, 46, 1500, 1501]),           # payload bytes
    st.booleans()),                                 # 802.1Q-tagged
    min_size=1, max_size=40)


# With several workers, each frame goes into another queue of its port, so
# another thread switches it: what one learned, the next must know.
@pytest.mark.parametrize("workers", [1, 3])
@settings(max_examples=60, deadline=None)
@given(conversation=conversations)
def test_c_and_model_agree_on_any_conversation(workers, conversation):
    c, m = Rig(workers=workers), Model()
    try:
        for sw in (c, m):
            for net in (1, 1, 1, 2):
                sw.port(net)
        for pid, dst, src, size, tagged in conversation:
            f = frame(BCAST if dst == 0xFFFF else mac(dst), mac(src), bytes(size),
                      b"\x81\x00\x00\x07\x08\x00" if tagged else b"\x08\x00")
            c.send(pid, f)
            m.send(pid, f)
            for p in range(4):
                assert c.received(p) == m.received(p), (pid, dst, src, size, tagged)
            assert decisions(c) == decisions(m)
    finally:
        c.close()

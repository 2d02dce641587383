"""The data plane's switching rules, run against the C code on socketpairs
and against the Python model alike (dataplane_model.py)."""

from __future__ import annotations

import pytest
from dataplane_model import BROADCAST, CSwitch, ModelSwitch, frame, mac
from hypothesis import given, settings
from hypothesis import strategies as st

IMPLEMENTATIONS = {"c": CSwitch, "model": ModelSwitch}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def sw(request):
    s = IMPLEMENTATIONS[request.param]()
    s.add_network(1, 100, 1500)
    s.add_network(2, 200, 1500)
    yield s
    s.close()


def test_unknown_unicast_floods_within_its_network_only(sw):
    a, b, c = sw.add_port(1), sw.add_port(1), sw.add_port(1)
    other = sw.add_port(2)
    f = frame(mac(9), mac(1))
    sw.send(a, f)
    assert sw.received(b) == [f] and sw.received(c) == [f]
    assert sw.received(a) == [] and sw.received(other) == []
    assert sw.counters()["flooded"] == 1


def test_a_learned_mac_gets_unicast(sw):
    a, b, c = sw.add_port(1), sw.add_port(1), sw.add_port(1)
    sw.send(b, frame(BROADCAST, mac(2)))
    for p in (a, c):
        sw.received(p)
    f = frame(mac(2), mac(1))
    sw.send(a, f)
    assert sw.received(b) == [f] and sw.received(c) == []
    assert sw.counters()["unicast"] == 1


def test_a_mac_that_moves_is_followed(sw):
    a, b, c = sw.add_port(1), sw.add_port(1), sw.add_port(1)
    sw.send(b, frame(BROADCAST, mac(2)))
    sw.send(c, frame(BROADCAST, mac(2)))              # the pod moved to port c
    for p in (a, b, c):
        sw.received(p)
    sw.send(a, frame(mac(2), mac(1)))
    assert len(sw.received(c)) == 1 and sw.received(b) == []


@pytest.mark.parametrize("bad, reason", [
    (b"\x02\x00\x00", "runt"),
    (frame(mac(2), BROADCAST), "bad_source"),
    (frame(mac(2), mac(1), size=14 + 1501), "oversize"),
])
def test_bad_frames_are_dropped_by_reason(sw, bad, reason):
    a, b = sw.add_port(1), sw.add_port(1)
    sw.send(a, bad)
    assert sw.received(b) == []
    assert sw.counters()["drops"] == {reason: 1}


def test_a_frame_for_the_ingress_port_is_a_loop(sw):
    a, b = sw.add_port(1), sw.add_port(1)
    sw.send(a, frame(BROADCAST, mac(1)))
    sw.received(b)
    sw.send(a, frame(mac(1), mac(3)))
    assert sw.counters()["drops"] == {"loop": 1}


def test_alone_in_a_network_is_no_route(sw):
    a = sw.add_port(1)
    sw.add_port(2)
    sw.send(a, frame(BROADCAST, mac(1)))
    assert sw.counters()["drops"] == {"no_route": 1}


# A random conversation: both implementations deliver the same frames to
# the same ports and count the same, frame after frame.
steps = st.lists(st.tuples(st.integers(0, 3),                  # ingress port
                           st.sampled_from([0, 1, 2, 3, 0xFF]),  # destination MAC (0xFF: broadcast)
                           st.integers(1, 4),                  # source MAC
                           st.sampled_from([10, 64, 1514, 1515])),  # frame size
                 min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_c_and_model_agree_on_any_conversation(conversation):
    c, m = CSwitch(), ModelSwitch()
    try:
        for s in (c, m):
            s.add_network(1, 100, 1500)
            s.add_network(2, 200, 1500)
            for net in (1, 1, 1, 2):
                s.add_port(net)
        for port, dst, src, size in conversation:
            f = frame(BROADCAST if dst == 0xFF else mac(dst), mac(src), size)
            c.send(port, f)
            m.send(port, f)
            for p in range(4):
                assert c.received(p) == m.received(p), (port, dst, src, size)
            assert c.counters() == m.counters()
    finally:
        c.close()

# Counters and drop reasons (see _counters.pxd).

# The drop reasons' names, in the order of their enum, come from the one
# table clients share (tests/unit/test_protocol.py compares the enum with it).
from vswitch.protocol import DROP_NAMES
assert len(DROP_NAMES) == N_DROP_REASONS


cdef inline void count_drop(worker_t *w, uint32_t in_id, int reason) noexcept nogil:
    """A frame from port (or peer) in_id dropped at ingress, on worker w."""
    w.totals.drops[reason] += 1
    stats_of(w, in_id).rx_dropped += 1


cdef inline int write_error_reason(ssize_t w) noexcept nogil:
    """The drop reason of a short or failed write (errno as it left it)."""
    if w < 0 and errno == EAGAIN:
        return DROP_QUEUE_FULL
    if w < 0 and errno == EIO:
        return DROP_PORT_DOWN
    return DROP_WRITE_ERROR


cdef dict port_counters(const port_stats_t *p):
    return {"rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes, "rx_dropped": p.rx_dropped,
            "tx_packets": p.tx_packets, "tx_bytes": p.tx_bytes, "tx_dropped": p.tx_dropped,
            "policy_denied": p.policy_denied}


cdef dict counters_dict(const counters_t *c):
    return {"unicast": c.unicast, "flooded": c.flooded,
            "drops": {DROP_NAMES[i]: c.drops[i] for i in range(N_DROP_REASONS)}}

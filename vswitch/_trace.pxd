# A trace's sink: the steps the pipeline takes for one frame, recorded where
# it would otherwise learn, send or count (worker_t.trace not NULL).
# _trace.pxi turns them into the answer of `vswitchctl trace`.

from libc.stdint cimport int64_t, uint64_t

cdef enum:  # what a step records
    TRACE_CHECKS              # the ingress checks passed
    TRACE_RATE                # an ingress (port: -1) or egress rate limit: reason -1 or the drop
    TRACE_LEARN               # source mac; where it was known (port, -1), pinned there (value)
    TRACE_ARP                 # answered here with mac
    TRACE_ND
    TRACE_GATEWAY_REPLY       # steered back through host port `port`
    TRACE_FDB                 # the destination mac looked up: port, or DEST_FLOOD / DEST_LOOP
    TRACE_POLICY              # NetworkPolicy's verdict towards port (-1: the peers)
    TRACE_SEND                # a copy to port `port`
    TRACE_ENCAP               # a copy to peer `port` (PEER_BASE + index); reason: -1 or the drop
    TRACE_DROP                # the frame (or a copy towards port) dropped for reason


cdef struct trace_step_t:
    int kind
    int reason
    int64_t port
    uint64_t mac
    int64_t value
    verdict_t verdict         # TRACE_POLICY


cdef struct trace_t:
    trace_step_t *steps
    int n, size               # steps beyond size are not kept (counted in n)

# What one forwarding thread owns (one thread today: Datapath.w): its frame
# buffers, its epoll set, its tunnel queues and sockets, its GRO train and
# its share of the counters; for a trace, also the sink its steps go to.
# Nothing here is touched by another thread. Everything else the pipeline
# reads or writes is the Datapath's (_fastpath.pxd), shared by all workers.

from libc.stdint cimport uint64_t


cdef struct worker_t:
    int batch                 # frames read from one fd in a turn
    unsigned char *slots      # one buffer per frame of a batch (SLOT_SIZE each)
    poller_t poller
    tunnel_tx_t tx
    tunnel_rx_t rx
    gro_t gro
    counters_t totals         # switch-wide counters: this worker's share
    port_t tunnel             # the tunnel's rx/tx counters: this worker's share
    uint64_t gateway_replies  # frames steered back through a host port (_gateway.pxi)
    trace_t *trace            # not NULL: a trace run, nothing is sent, learned or counted

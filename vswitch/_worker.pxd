# What one forwarding thread owns: its frame buffers, its epoll set (its
# queue of every port, its tunnel socket), its tunnel queues and sockets,
# its GRO train and its share of the counters; for a trace, also the sink
# its steps go to. Nothing here is written by another thread, but for the
# quiescence marks the control plane reads (epoch, online) and the failed
# list it takes under the poller's lock. Everything else the pipeline reads
# or writes is the Datapath's (_fastpath.pxd), shared by all workers.

from libc.stdint cimport uint64_t


cdef struct peer_stats_t:     # a peer's counters: one per worker, summed on read
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t tx_dropped


cdef struct worker_t:
    int index                 # 0..workers-1: the queue it reads of every multi-queue port
    int batch                 # frames read from one fd in a turn
    unsigned char *slots      # one buffer per frame of a batch (SLOT_SIZE each)
    poller_t poller
    tunnel_tx_t tx
    tunnel_rx_t rx
    gro_t gro
    counters_t totals         # switch-wide counters: this worker's share
    port_t tunnel             # the tunnel as the ingress port of decapsulated frames
    port_stats_t *stats       # per port id, then the tunnel's (TUNNEL_STATS): this worker's share
    peer_stats_t *peer_stats  # per peer index: this worker's share
    uint64_t gateway_replies  # frames steered back through a host port (_gateway.pxi)
    uint64_t arp_answered     # ARP requests answered from the neighbour table
    uint64_t nd_answered      # ... and Neighbor Solicitations
    uint64_t frames           # frames and tunnel datagrams it read (a rig waits on it)
    unsigned char reply[VNET_HLEN + NA_FRAME_LEN]    # an ARP or ND answer being written
    # Quiescence (Datapath.reclaim): epoch moves after every round, and
    # online is 0 while the thread waits in epoll_wait holding nothing.
    uint64_t epoch
    int online
    int stop_fd               # eventfd in its epoll set: the thread returns when it is readable
    trace_t *trace            # not NULL: a trace run, nothing is sent, learned or counted
    unsigned char pad[128]    # the next worker's first lines are not ours (workers are an array)

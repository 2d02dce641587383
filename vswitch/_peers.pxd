# Peers: remote VTEPs, and which networks each is a member of (flooded to,
# accepted from). FDB entries name a peer as PEER_BASE + its index.

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    MAX_PEERS = 8192          # nodes a cluster may have beside this one (Kubernetes: 5,000)
    PEER_BASE = MAX_PORTS
    PEER_INDEX = 2 * MAX_PEERS    # slots of the address -> peer hash index (half full at most)
    MAX_MEMBERS = 65536       # (network, peer) pairs
    MEMBER_BYTES = MAX_NETWORKS // 8     # one peer's row of the (peer, network) bitmap


cdef struct peer_t:           # (its counters: peer_stats_t, one per worker)
    ip_key_t ip               # its VTEP (_underlay.pxd); all zero: a free slot
    bint learned              # added by learn_peers (ages, capped), not configured
    bint retiring             # forgotten, not yet reclaimed: not to be reused
    uint64_t last_rx_ns       # the last datagram accepted from it (stored atomically)


cdef struct peers_t:
    # Shared by all workers. Writers (the control plane; a worker learning a
    # peer, with learn_peers) hold `lock` and wrap changes of the index and
    # of a slot's address in `seq`; workers read without a lock (_sync.pxd).
    # A forgotten slot is reused only after a grace period (Datapath.reclaim),
    # and flooding checks member_bits (one byte, read atomically) for each
    # member it sends to, so a change of the member list never sends a
    # network's frame to a peer outside it.
    pthread_mutex_t lock
    seqcount_t seq
    peer_t *slots             # MAX_PEERS of them
    int32_t *index            # PEER_INDEX slots: a peer's index (open addressing), -1: none
    sockaddr_in6 *addr        # each one's socket address (of its family) and the UDP port
    uint32_t *addr_len        # ... and that sockaddr's length
    uint32_t limit            # highest index in use + 1
    uint16_t *member_net      # the (network, peer) pairs, for flooding
    uint16_t *member_peer
    uint32_t n_members
    uint8_t *member_bits      # [peer][network] bitmap: checked for every datagram received
    uint32_t n_learned
    uint32_t max_learned
    uint16_t udp_port

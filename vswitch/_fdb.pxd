# The forwarding database: (network, MAC) -> port or peer (see _fdb.pxi).

from libc.stdint cimport uint16_t, uint32_t, uint64_t

cdef enum:
    FDB_MAX_PROBE = 128       # slots a lookup or insert walks from an entry's home, at most

cdef enum:                    # fdb_entry_t.kind
    FDB_LEARNED = 0           # ages, moves when the MAC is seen elsewhere
    FDB_STATIC = 1            # configured: never ages, not moved by learning
    FDB_PINNED = 2            # a port-secured port's own MAC: as static, and frames with
                              # it as source from anywhere else are dropped


cdef struct fdb_entry_t:      # 16 bytes: a million entries in 32 MB of table (load 1/2)
    uint64_t key              # network << 48 | mac; 0 = empty slot
    uint32_t seen_ms          # last time the source was seen: CLOCK_MONOTONIC in ms,
                              # modulo 2^32 (ages are differences; learned entries never
                              # live 49 days unseen, static ones do not age)
    uint16_t port             # local port id, or PEER_BASE + peer index
    uint16_t kind             # FDB_LEARNED, FDB_STATIC or FDB_PINNED


cdef struct fdb_t:
    # Shared by all workers. Writers (a worker learning a new or moved MAC,
    # the control plane) hold `lock` and wrap each change in `seq`; readers
    # take no lock (the seqcount protocol, _sync.pxd). A worker refreshing
    # the entry of a MAC seen where it lives stores its seen_ms only (one
    # word, atomically), and a worker that finds the lock held learns later.
    pthread_mutex_t lock
    seqcount_t seq
    fdb_entry_t *slots
    uint64_t mask             # capacity - 1, capacity a power of two
    uint64_t count
    uint64_t max_entries      # learning stops here (counted as fdb_full)
    uint32_t aging_ms
    uint64_t multiplier       # the hash's secret (random, odd), new every start
    uint32_t shift            # 64 - log2(capacity): the hash keeps the product's top bits
    uint32_t *owned           # learned entries per port id / PEER_BASE + peer
    uint32_t max_per_port     # learned entries one port may hold
    uint32_t max_per_peer     # ... and one peer
    uint64_t sweep_at         # where the incremental expiry sweep goes on
    uint64_t learned          # new entries (these four: written under the lock, or atomically)
    uint64_t moves            # a MAC seen on another port than before
    uint64_t full             # learn attempts refused: table full, or no slot within FDB_MAX_PROBE
    uint64_t limited          # learn attempts refused: the port or peer holds its maximum
    uint64_t busy             # learn attempts put off: another writer held the table
    uint64_t expired

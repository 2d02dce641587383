# Forwarding database: an open-addressing hash table keyed by
# (network, MAC), linear probing, backward-shift deletion (no tombstones,
# so lookups stay short however many entries come and go).
#
# Against hash flooding (a pod or peer sending from MACs chosen to collide):
# the hash is multiply-shift universal hashing with a random odd multiplier
# drawn at every start (the product's top bits, which every key bit
# reaches), so colliding MACs cannot be computed ahead; no entry lives more
# than FDB_MAX_PROBE slots from its home (an insert that would is refused and
# counted), so no lookup walks further; and each port and peer may hold
# only so many learned entries.
# The table's layout is in _fdb.pxd; all functions are C-only.


cdef inline uint64_t fdb_key(uint16_t network, uint64_t mac) noexcept nogil:
    return (<uint64_t>network << 48) | mac


cdef inline uint32_t ms32(uint64_t ns) noexcept nogil:
    """A time in ns as the entries keep it: ms, modulo 2^32."""
    return <uint32_t>(ns // 1000000)


cdef inline bint fdb_expired(const fdb_t *t, const fdb_entry_t *e, uint64_t now) noexcept nogil:
    return e.kind == FDB_LEARNED and <uint32_t>(ms32(now) - e.seen_ms) > t.aging_ms


cdef inline uint64_t fdb_slot_of(const fdb_t *t, uint64_t key) noexcept nogil:
    # One multiply, as cheap as the unkeyed Fibonacci hash it replaces; keys
    # x != y collide with probability at most 2/capacity over the multiplier.
    return (key * t.multiplier) >> t.shift


cdef inline uint32_t fdb_owner_limit(const fdb_t *t, uint32_t port) noexcept nogil:
    return t.max_per_peer if port >= PEER_BASE else t.max_per_port


cdef int fdb_init(fdb_t *t, uint64_t max_entries, uint64_t aging_ns,
                  uint64_t seed) noexcept nogil:
    cdef uint64_t cap = 16
    while cap < max_entries * 2:        # load factor stays at or below 1/2
        cap <<= 1
    t.slots = <fdb_entry_t *>calloc(cap, sizeof(fdb_entry_t))
    t.owned = <uint32_t *>calloc(PEER_BASE + MAX_PEERS, sizeof(uint32_t))
    if t.slots == NULL or t.owned == NULL:
        return -1
    t.mask = cap - 1
    t.shift = 64
    while cap > 1:
        cap >>= 1
        t.shift -= 1
    t.count = 0
    t.max_entries = max_entries
    t.aging_ms = <uint32_t>(aging_ns // 1000000)
    t.multiplier = seed | 1
    t.max_per_port = t.max_per_peer = <uint32_t>min(max_entries, 0xFFFFFFFFULL)
    t.sweep_at = 0
    t.learned = t.moves = t.full = t.limited = t.expired = t.busy = 0
    t.seq.seq = 0
    return pthread_mutex_init(&t.lock, NULL)


cdef void fdb_destroy(fdb_t *t) noexcept nogil:
    if t.slots != NULL:
        pthread_mutex_destroy(&t.lock)
    free(t.slots)
    free(t.owned)
    t.slots = NULL
    t.owned = NULL


cdef inline int64_t fdb_free_slot(fdb_t *t, uint64_t key) noexcept nogil:
    """The slot of key's entry, or the empty slot where it would go; -1 when
    neither is within FDB_MAX_PROBE of its home."""
    cdef uint64_t home = fdb_slot_of(t, key), k, i
    for k in range(FDB_MAX_PROBE):
        i = (home + k) & t.mask
        if t.slots[i].key == 0 or t.slots[i].key == key:
            return i
    return -1


cdef inline fdb_entry_t *fdb_find(fdb_t *t, uint64_t key) noexcept nogil:
    """A writer's look-up (under the lock)."""
    cdef int64_t i = fdb_free_slot(t, key)
    return &t.slots[i] if i >= 0 and t.slots[i].key != 0 else NULL


cdef inline int64_t fdb_read(fdb_t *t, uint64_t key, fdb_entry_t *out) noexcept nogil:
    """A reader's look-up, lock-free: the slot of key's entry (a copy in
    out; out.key 0 when there is none, the slot then where it would go), or
    -1 when neither is within FDB_MAX_PROBE of its home."""
    cdef unsigned s
    cdef int64_t i
    while True:
        s = seq_read_begin(&t.seq)
        i = fdb_free_slot(t, key)
        if i >= 0:
            out[0] = t.slots[i]
        if not seq_read_retry(&t.seq, s):
            break
    if i >= 0 and out.key != key:
        out.key = 0
    return i


cdef inline int64_t fdb_pinned_port(fdb_t *t, uint16_t network, uint64_t mac) noexcept nogil:
    """The port a MAC is pinned to, or -1."""
    cdef fdb_entry_t e
    if fdb_read(t, fdb_key(network, mac), &e) < 0 or e.key == 0:
        return -1
    return e.port if e.kind == FDB_PINNED else -1


cdef inline int64_t fdb_lookup(fdb_t *t, uint16_t network, uint64_t mac, uint64_t now) noexcept nogil:
    """Port of a live entry, or -1 (absent or older than the aging time)."""
    cdef fdb_entry_t e
    if fdb_read(t, fdb_key(network, mac), &e) < 0 or e.key == 0 or fdb_expired(t, &e, now):
        return -1
    return e.port


cdef inline int fdb_learn(fdb_t *t, uint16_t network, uint64_t mac, uint32_t port,
                          uint64_t now) noexcept nogil:
    """Learn that mac is behind port. 0: learned, refreshed, or not learned
    (table full, the port or peer holds its maximum, or another writer holds
    the table: counted, the frame still goes on); -1: the MAC is pinned to
    another port (drop the frame). Only a new or moved MAC takes the lock."""
    cdef fdb_entry_t e
    cdef uint64_t key = fdb_key(network, mac)
    cdef int64_t i = fdb_read(t, key, &e)
    cdef uint32_t ms = ms32(now)
    if i < 0:
        add_u64(&t.full, 1)
        return 0
    if e.key != 0:
        if e.port == port:                  # the common case: seen again where it lives
            if e.seen_ms != ms:             # (static and pinned entries ignore it)
                store_u32(&t.slots[i].seen_ms, ms)  # a raced slot's other entry: refreshed early
            return 0
        if e.kind == FDB_PINNED:
            return -1
        if e.kind == FDB_STATIC:
            return 0
    if pthread_mutex_trylock(&t.lock) != 0:
        add_u64(&t.busy, 1)
        return 0
    cdef int r = fdb_learn_locked(t, key, port, ms)
    pthread_mutex_unlock(&t.lock)
    return r


cdef int fdb_learn_locked(fdb_t *t, uint64_t key, uint32_t port, uint32_t ms) noexcept nogil:
    """fdb_learn's writing half, under the lock: the table as it is now."""
    cdef int64_t i = fdb_free_slot(t, key)
    if i < 0:
        t.full += 1
        return 0
    cdef fdb_entry_t *e = &t.slots[i]
    if e.key != 0:
        if e.port == port:
            e.seen_ms = ms
            return 0
        if e.kind == FDB_PINNED:
            return -1
        if e.kind == FDB_STATIC:
            return 0
        if t.owned[port] >= fdb_owner_limit(t, port):
            t.limited += 1
            return 0
        t.owned[e.port] -= 1
        t.owned[port] += 1
        seq_write_begin(&t.seq)
        e.port = port
        e.seen_ms = ms
        seq_write_end(&t.seq)
        t.moves += 1
        return 0
    if t.count >= t.max_entries:
        t.full += 1
        return 0
    if t.owned[port] >= fdb_owner_limit(t, port):
        t.limited += 1
        return 0
    seq_write_begin(&t.seq)
    e.port = port
    e.seen_ms = ms
    e.kind = FDB_LEARNED
    e.key = key
    seq_write_end(&t.seq)
    t.owned[port] += 1
    t.count += 1
    t.learned += 1
    return 0


cdef int fdb_set_static(fdb_t *t, uint16_t network, uint64_t mac, uint32_t port,
                        uint16_t kind) noexcept nogil:
    """Add or overwrite a static or pinned entry; -1 when the table is full.
    The control plane's writes (this, fdb_delete, fdb_sweep) take the lock."""
    cdef uint64_t key = fdb_key(network, mac)
    pthread_mutex_lock(&t.lock)
    cdef int64_t i = fdb_free_slot(t, key)
    if i < 0 or (t.slots[i].key == 0 and t.count >= t.max_entries):
        pthread_mutex_unlock(&t.lock)
        return -1
    cdef fdb_entry_t *e = &t.slots[i]
    if e.key == 0:
        t.count += 1
    elif e.kind == FDB_LEARNED:
        t.owned[e.port] -= 1
    seq_write_begin(&t.seq)
    e.key = key
    e.port = port
    e.kind = kind
    seq_write_end(&t.seq)
    pthread_mutex_unlock(&t.lock)
    return 0


cdef int fdb_delete(fdb_t *t, uint16_t network, uint64_t mac) noexcept nogil:
    """Delete one entry; -1 when there is none."""
    pthread_mutex_lock(&t.lock)
    cdef fdb_entry_t *e = fdb_find(t, fdb_key(network, mac))
    if e != NULL:
        fdb_delete_slot(t, e - t.slots)
    pthread_mutex_unlock(&t.lock)
    return 0 if e != NULL else -1


cdef void fdb_delete_slot(fdb_t *t, uint64_t hole) noexcept nogil:
    """Empty slot `hole` and shift later members of its cluster back (each
    only closer to its home, so FDB_MAX_PROBE still holds). Under the lock."""
    if t.slots[hole].kind == FDB_LEARNED:
        t.owned[t.slots[hole].port] -= 1
    cdef uint64_t j = hole, home
    seq_write_begin(&t.seq)
    while True:
        j = (j + 1) & t.mask
        if t.slots[j].key == 0:
            break
        home = fdb_slot_of(t, t.slots[j].key)
        # Move j into the hole unless its home lies cyclically in (hole, j].
        if (j > hole and (home <= hole or home > j)) or \
           (j < hole and (home <= hole and home > j)):
            t.slots[hole] = t.slots[j]
            hole = j
    t.slots[hole].key = 0
    seq_write_end(&t.seq)
    t.count -= 1


cdef enum FdbSweep:
    SWEEP_ALL = 0        # every learned entry of the network (0 = all networks)
    SWEEP_PORT = 1       # entries pointing at one port (or peer)
    SWEEP_EXPIRED = 2    # entries older than the aging time
    SWEEP_NETWORK = 3    # every entry of the network, static ones too
    SWEEP_PEERS = 4      # entries pointing at any of a set of peers (gone[index] set)


cdef uint64_t fdb_sweep(fdb_t *t, int kind, uint16_t network, uint32_t port, uint64_t now,
                        uint64_t budget=0, const uint8_t *gone=NULL) noexcept nogil:
    """Delete matching entries; returns how many. budget > 0: look at that
    many slots from where the last budgeted sweep stopped (so that a large
    table is swept in slices between polling rounds), else the whole table.

    After a deletion the same index is examined again: backward shift may
    have moved an unexamined entry into it, and never moves one behind it.
    """
    cdef uint64_t i = t.sweep_at if budget else 0, removed = 0, seen = 0
    cdef fdb_entry_t *e
    cdef bint match
    pthread_mutex_lock(&t.lock)
    while (seen < budget) if budget else (i <= t.mask):
        if i > t.mask:
            i = 0
        seen += 1
        e = &t.slots[i]
        if e.key != 0:
            if kind == SWEEP_PORT:
                match = e.port == port
            elif kind == SWEEP_EXPIRED:
                match = fdb_expired(t, e, now)
            elif kind == SWEEP_NETWORK:
                match = (e.key >> 48) == network
            elif kind == SWEEP_PEERS:
                match = e.port >= PEER_BASE and gone[e.port - PEER_BASE]
            else:               # learned entries only: static ones stay until deleted
                match = e.kind == FDB_LEARNED and (network == 0 or (e.key >> 48) == network)
            if match:
                fdb_delete_slot(t, i)
                removed += 1
                continue
        i += 1
    if budget:
        t.sweep_at = i
    pthread_mutex_unlock(&t.lock)
    return removed

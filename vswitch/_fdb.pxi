# Forwarding database: an open-addressing hash table keyed by
# (network, MAC), linear probing, backward-shift deletion (no tombstones,
# so lookups stay short however many entries come and go).
# Included by _fastpath.pyx; all functions are C-only.

from libc.stdlib cimport calloc, free


cdef inline uint64_t fdb_key(uint16_t network, uint64_t mac) noexcept nogil:
    return (<uint64_t>network << 48) | mac


cdef inline uint32_t ms32(uint64_t ns) noexcept nogil:
    """A time in ns as the entries keep it: ms, modulo 2^32."""
    return <uint32_t>(ns // 1000000)


cdef inline bint fdb_expired(const fdb_t *t, const fdb_entry_t *e, uint64_t now) noexcept nogil:
    return not e.is_static and <uint32_t>(ms32(now) - e.seen_ms) > t.aging_ms


cdef inline uint64_t fdb_slot_of(const fdb_t *t, uint64_t key) noexcept nogil:
    # Fibonacci hashing: multiply, keep the high bits.
    return ((key * <uint64_t>0x9E3779B97F4A7C15ULL) >> 20) & t.mask


cdef int fdb_init(fdb_t *t, uint64_t max_entries, uint64_t aging_ns) noexcept nogil:
    cdef uint64_t cap = 16
    while cap < max_entries * 2:        # load factor stays at or below 1/2
        cap <<= 1
    t.slots = <fdb_entry_t *>calloc(cap, sizeof(fdb_entry_t))
    if t.slots == NULL:
        return -1
    t.mask = cap - 1
    t.count = 0
    t.max_entries = max_entries
    t.aging_ms = <uint32_t>(aging_ns // 1000000)
    t.learned = t.moves = t.full = t.expired = 0
    return 0


cdef void fdb_destroy(fdb_t *t) noexcept nogil:
    free(t.slots)
    t.slots = NULL


cdef inline fdb_entry_t *fdb_find(fdb_t *t, uint64_t key) noexcept nogil:
    cdef uint64_t i = fdb_slot_of(t, key)
    while t.slots[i].key != 0:
        if t.slots[i].key == key:
            return &t.slots[i]
        i = (i + 1) & t.mask
    return NULL


cdef inline int64_t fdb_lookup(fdb_t *t, uint16_t network, uint64_t mac, uint64_t now) noexcept nogil:
    """Port of a live entry, or -1 (absent or older than the aging time)."""
    cdef fdb_entry_t *e = fdb_find(t, fdb_key(network, mac))
    if e == NULL or fdb_expired(t, e, now):
        return -1
    return e.port


cdef inline void fdb_learn(fdb_t *t, uint16_t network, uint64_t mac, uint32_t port, uint64_t now) noexcept nogil:
    cdef uint64_t key = fdb_key(network, mac)
    cdef uint64_t i = fdb_slot_of(t, key)
    while t.slots[i].key != 0:
        if t.slots[i].key == key:
            if t.slots[i].is_static:
                return
            if t.slots[i].port != port:
                t.slots[i].port = port
                t.moves += 1
            t.slots[i].seen_ms = ms32(now)
            return
        i = (i + 1) & t.mask
    if t.count >= t.max_entries:
        t.full += 1
        return
    t.slots[i].key = key
    t.slots[i].port = port
    t.slots[i].seen_ms = ms32(now)
    t.slots[i].is_static = False
    t.count += 1
    t.learned += 1


cdef int fdb_set_static(fdb_t *t, uint16_t network, uint64_t mac, uint32_t port) noexcept nogil:
    """Add or overwrite a static entry; -1 when the table is full."""
    cdef uint64_t key = fdb_key(network, mac)
    cdef uint64_t i = fdb_slot_of(t, key)
    while t.slots[i].key != 0 and t.slots[i].key != key:
        i = (i + 1) & t.mask
    if t.slots[i].key == 0:
        if t.count >= t.max_entries:
            return -1
        t.count += 1
    t.slots[i].key = key
    t.slots[i].port = port
    t.slots[i].is_static = True
    return 0


cdef int fdb_delete(fdb_t *t, uint16_t network, uint64_t mac) noexcept nogil:
    """Delete one entry; -1 when there is none."""
    cdef fdb_entry_t *e = fdb_find(t, fdb_key(network, mac))
    if e == NULL:
        return -1
    fdb_delete_slot(t, e - t.slots)
    return 0


cdef void fdb_delete_slot(fdb_t *t, uint64_t hole) noexcept nogil:
    """Empty slot `hole` and shift later members of its cluster back."""
    cdef uint64_t j = hole, home
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
    t.count -= 1


cdef enum FdbSweep:
    SWEEP_ALL = 0        # every learned entry of the network (0 = all networks)
    SWEEP_PORT = 1       # entries pointing at one port (or peer)
    SWEEP_EXPIRED = 2    # entries older than the aging time
    SWEEP_NETWORK = 3    # every entry of the network, static ones too


cdef uint64_t fdb_sweep(fdb_t *t, int kind, uint16_t network, uint32_t port, uint64_t now) noexcept nogil:
    """Delete matching entries; returns how many.

    After a deletion the same index is examined again: backward shift may
    have moved an unexamined entry into it, and never moves one behind it.
    """
    cdef uint64_t i = 0, removed = 0
    cdef fdb_entry_t *e
    cdef bint match
    while i <= t.mask:
        e = &t.slots[i]
        if e.key != 0:
            if kind == SWEEP_PORT:
                match = e.port == port
            elif kind == SWEEP_EXPIRED:
                match = fdb_expired(t, e, now)
            elif kind == SWEEP_NETWORK:
                match = (e.key >> 48) == network
            else:               # learned entries only: static ones stay until deleted
                match = not e.is_static and (network == 0 or (e.key >> 48) == network)
            if match:
                fdb_delete_slot(t, i)
                removed += 1
                continue
        i += 1
    return removed

# Connection tracking (see _conntrack.pxd): open addressing, linear probing
# and backward-shift deletion, a keyed multiply-shift hash of the key's
# words. Lookups and inserts run per packet; growing and expiry sweeps are
# control-plane calls. An expired entry is a miss until a sweep removes it.


cdef inline ct_key_t ct_key(uint16_t network, uint8_t proto, const ip_key_t *src, uint16_t sport,
                            const ip_key_t *dst, uint16_t dport, const ip_key_t *beside,
                            bint *src_is_a) noexcept nogil:
    """The canonical key of a packet's connection; src_is_a: whether the
    packet's source is the key's endpoint a. beside: NULL when no host port
    is on the packet's path, else the address of the end that is not the
    host port (it picks the zone, see _conntrack.pxd)."""
    cdef ct_key_t k
    src_is_a[0] = key_lt(src, dst) or (key_eq(src, dst) and sport <= dport)
    if not src_is_a[0]:
        src, dst, sport, dport = dst, src, dport, sport
    k.a, k.b = src[0], dst[0]
    cdef uint64_t zone = CT_ZONE_DIRECT
    if beside != NULL:
        zone = CT_ZONE_ROUTED_A if key_eq(beside, &k.a) else CT_ZONE_ROUTED_B
    k.rest = ((zone << 56) | (<uint64_t>network << 40) | (<uint64_t>proto << 32) |
              (<uint64_t>sport << 16) | dport)
    return k


cdef inline bint ct_key_eq(const ct_key_t *x, const ct_key_t *y) noexcept nogil:
    return x.rest == y.rest and key_eq(&x.a, &y.a) and key_eq(&x.b, &y.b)


cdef inline uint64_t ct_home(const ct_t *t, const ct_key_t *k) noexcept nogil:
    # Multiply-shift over the key's five words, with secret multipliers.
    return ((k.a.hi * t.secrets[0] + k.a.lo * t.secrets[1] + k.b.hi * t.secrets[2] +
             k.b.lo * t.secrets[3] + k.rest * t.secrets[4]) >> t.shift)


cdef inline bint ct_live(const ct_entry_t *e, uint32_t now_ms) noexcept nogil:
    return <int32_t>(now_ms - e.deadline_ms) < 0


cdef void ct_release(ct_t *t) noexcept nogil:
    """The table's memory (not the counts: ct_free)."""
    if t.slots != NULL:
        munmap(t.slots, (t.mask + 1) * sizeof(ct_entry_t))
        t.slots = NULL


cdef int ct_alloc(ct_t *t, uint64_t max_entries) noexcept nogil:
    """An empty table for max_entries connections (at most half full), in
    huge pages where the kernel gives them: a lookup in a large table
    costs one cache miss then, not a TLB miss on top. Pages are touched
    (and so taken) only as entries land in them."""
    cdef uint64_t capacity = CT_MIN_SLOTS
    while capacity < 2 * max_entries:
        capacity <<= 1
    cdef void *mem = mmap(NULL, capacity * sizeof(ct_entry_t), PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if mem == MAP_FAILED:
        return -1
    madvise(mem, capacity * sizeof(ct_entry_t), MADV_HUGEPAGE)    # a hint: fine if refused
    ct_release(t)
    if t.via_gateway != NULL:
        memset(t.via_gateway, 0, CT_GATEWAY_COUNTS * sizeof(uint32_t))
        memset(t.owned, 0, CT_OWNERS * sizeof(uint32_t))
    cdef ct_entry_t *slots = <ct_entry_t *>mem
    t.slots, t.mask, t.count, t.max_entries, t.sweep_at = slots, capacity - 1, 0, max_entries, 0
    t.shift = 64
    while capacity > 1:
        capacity >>= 1
        t.shift -= 1
    return 0


cdef int ct_init(ct_t *t, uint64_t max_entries, uint64_t seed) noexcept nogil:
    memset(t, 0, sizeof(ct_t))
    cdef int i
    for i in range(5):                  # splitmix64: five multipliers of one seed
        seed += 0x9E3779B97F4A7C15ULL
        t.secrets[i] = (seed ^ (seed >> 31)) * 0xBF58476D1CE4E5B9ULL
        t.secrets[i] = (t.secrets[i] ^ (t.secrets[i] >> 27)) * 0x94D049BB133111EBULL | 1
    t.via_gateway = <uint32_t *>calloc(CT_GATEWAY_COUNTS, sizeof(uint32_t))
    t.owned = <uint32_t *>calloc(CT_OWNERS, sizeof(uint32_t))
    if t.via_gateway == NULL or t.owned == NULL:
        return -1
    t.max_per_owner = max_entries
    pthread_mutex_init(&t.lock, NULL)
    return ct_alloc(t, max_entries)


cdef inline uint64_t ct_slot(const ct_t *t, const ct_key_t *k) noexcept nogil:
    """The slot holding the key, or the empty slot where it would go."""
    cdef uint64_t i = ct_home(t, k)
    while t.slots[i].key.rest != 0 and not ct_key_eq(&t.slots[i].key, k):
        i = (i + 1) & t.mask
    return i


cdef inline ct_entry_t *ct_find(const ct_t *t, const ct_key_t *k, uint32_t now_ms) noexcept nogil:
    """The live entry of a connection, or NULL."""
    cdef ct_entry_t *e = &t.slots[ct_slot(t, k)]
    return e if e.key.rest != 0 and ct_live(e, now_ms) else NULL


cdef inline uint32_t ct_timeout(uint8_t proto, uint16_t flags) noexcept nogil:
    if proto == IPPROTO_TCP:
        if flags & CT_CLOSED or (flags & CT_FIN_A and flags & CT_FIN_B):
            return CT_TCP_CLOSING_MS
        return CT_TCP_ESTABLISHED_MS if flags & CT_REPLIED else CT_TCP_OPENING_MS
    return CT_REPLIED_MS if flags & CT_REPLIED else CT_UNREPLIED_MS


cdef inline void ct_touch(ct_entry_t *e, const flow_t *f, bint src_is_a,
                          uint32_t now_ms) noexcept nogil:
    """A packet of the connection went through: its state and deadline.
    The entry is written only when its state changes or its deadline
    moves by CT_REFRESH_MS: the packets of a burst leave its line clean."""
    cdef uint16_t flags = e.flags
    if src_is_a != <bint>(flags & CT_ORIG_A):
        flags |= CT_REPLIED
    if f.proto == IPPROTO_TCP and f.tcp_flags & (TCP_RST | TCP_FIN):
        if f.tcp_flags & TCP_RST:
            flags |= CT_CLOSED
        else:
            flags |= CT_FIN_A if src_is_a else CT_FIN_B
    cdef uint32_t deadline = now_ms + ct_timeout(f.proto, flags)
    if flags != e.flags or <int32_t>(deadline - e.deadline_ms) >= CT_REFRESH_MS:
        e.flags, e.deadline_ms = flags, deadline


cdef inline uint32_t *ct_owned(ct_t *t, uint16_t owner) noexcept nogil:
    return &t.owned[owner if owner < MAX_PORTS else MAX_PORTS]


cdef bint ct_early_drop(ct_t *t, uint32_t now_ms) noexcept nogil:
    """Room in a full table, as Linux's early drop makes it: evict the first
    connection never answered (or expired) among the next
    CT_EARLY_DROP_SCAN entries (in at most CT_MIN_SLOTS slots), going on
    from where the last look stopped. Whether one went."""
    cdef uint64_t i, seen = 0, looked = 0
    while seen < CT_EARLY_DROP_SCAN and looked < CT_MIN_SLOTS:
        i = t.early_at & t.mask
        t.early_at += 1
        looked += 1
        if t.slots[i].key.rest == 0:
            continue
        seen += 1
        if not t.slots[i].flags & CT_REPLIED or not ct_live(&t.slots[i], now_ms):
            ct_delete(t, &t.slots[i])
            t.early_dropped += 1
            return True
    return False


cdef ct_entry_t *ct_insert(ct_t *t, const ct_key_t *k, bint src_is_a, uint16_t in_port,
                           uint16_t out_port, uint16_t owner, uint32_t now_ms,
                           int *reason) noexcept nogil:
    """A new connection (or an expired one's slot taken again), charged to
    owner; NULL with the drop reason when the owner has its share of the
    table already, or the table is full of answered connections."""
    cdef ct_entry_t *e = &t.slots[ct_slot(t, k)]
    cdef uint32_t *owned = ct_owned(t, owner)
    if owned[0] >= t.max_per_owner and t.max_per_owner < t.max_entries and \
            not (e.key.rest != 0 and e.owner == owner):
        reason[0] = DROP_CONNTRACK_POD_FULL
        return NULL
    if e.key.rest == 0 and t.count >= t.max_entries:
        ct_sweep(t, now_ms, CT_SWEEP_WHEN_FULL)     # expired entries may make room
        if t.count >= t.max_entries:
            ct_early_drop(t, now_ms)
        e = &t.slots[ct_slot(t, k)]
        if t.count >= t.max_entries:
            reason[0] = DROP_CONNTRACK_FULL
            return NULL
    if e.key.rest == 0:
        t.count += 1
    else:
        ct_unmark_gateway(t, e)                 # an expired entry's slot, taken again
        ct_owned(t, e.owner)[0] -= 1
    e.key = k[0]
    e.flags = CT_ORIG_A if src_is_a else 0
    e.deadline_ms = now_ms + ct_timeout((k.rest >> 32) & 0xFF, e.flags)
    e.generation = t.generation
    e.in_port, e.out_port, e.owner = in_port, out_port, owner
    owned[0] += 1
    t.created += 1
    return e


cdef void ct_free(ct_t *t) noexcept nogil:
    ct_release(t)
    free(t.via_gateway)
    free(t.owned)
    t.via_gateway = t.owned = NULL


cdef inline uint32_t *ct_gateway_count(ct_t *t, uint16_t out_port) noexcept nogil:
    """Where CT_VIA_GATEWAY connections into out_port are counted: its own
    count for a port, one count shared by all peers for CT_NO_PORT."""
    return &t.via_gateway[out_port if out_port < MAX_PORTS else CT_GATEWAY_REMOTE]


cdef inline uint16_t ct_port(uint32_t port_id) noexcept nogil:
    """A port id as entries name it: peers (PEER_BASE + index) are CT_NO_PORT."""
    return <uint16_t>port_id if port_id < MAX_PORTS else CT_NO_PORT


cdef inline void ct_mark_gateway(ct_t *t, ct_entry_t *e) noexcept nogil:
    """The connection came in from a host port: replies go back there."""
    if not e.flags & CT_VIA_GATEWAY:
        e.flags |= CT_VIA_GATEWAY
        ct_gateway_count(t, e.out_port)[0] += 1


cdef inline void ct_unmark_gateway(ct_t *t, ct_entry_t *e) noexcept nogil:
    cdef uint32_t *count = ct_gateway_count(t, e.out_port)
    if e.flags & CT_VIA_GATEWAY and count[0]:
        count[0] -= 1


cdef void ct_delete(ct_t *t, ct_entry_t *e) noexcept nogil:
    """Remove an entry, shifting back the ones after it (no tombstones)."""
    ct_unmark_gateway(t, e)
    ct_owned(t, e.owner)[0] -= 1
    cdef uint64_t i = e - t.slots, j = i, home
    while True:
        j = (j + 1) & t.mask
        if t.slots[j].key.rest == 0:
            break
        home = ct_home(t, &t.slots[j].key)
        # Move j back to i unless its home lies cyclically in (i, j].
        if (j - home) & t.mask >= (j - i) & t.mask:
            t.slots[i] = t.slots[j]
            i = j
    memset(&t.slots[i], 0, sizeof(ct_entry_t))
    t.count -= 1


cdef uint64_t ct_sweep(ct_t *t, uint32_t now_ms, uint64_t budget) noexcept nogil:
    """Remove expired entries among `budget` slots from where the last sweep
    stopped (0: the whole table); returns how many."""
    cdef uint64_t looked = 0, removed = 0, i
    if budget == 0 or budget > t.mask + 1:
        budget = t.mask + 1
    while looked < budget:
        i = t.sweep_at & t.mask
        if t.slots[i].key.rest != 0 and not ct_live(&t.slots[i], now_ms):
            ct_delete(t, &t.slots[i])       # an entry may have moved into i: look again
            removed += 1
            continue
        t.sweep_at += 1
        looked += 1
    t.expired += removed
    return removed


cdef void ct_flush(ct_t *t) noexcept nogil:
    memset(t.slots, 0, (t.mask + 1) * sizeof(ct_entry_t))
    memset(t.via_gateway, 0, CT_GATEWAY_COUNTS * sizeof(uint32_t))
    memset(t.owned, 0, CT_OWNERS * sizeof(uint32_t))
    t.count = 0


cdef uint64_t ct_forget_owner(ct_t *t, uint16_t owner) noexcept nogil:
    """Remove the entries charged to a port that is going (its id will be
    another pod's); returns how many."""
    cdef uint64_t i = 0, removed = 0
    while ct_owned(t, owner)[0] and i <= t.mask:
        if t.slots[i].key.rest != 0 and t.slots[i].owner == owner:
            ct_delete(t, &t.slots[i])       # an entry may have moved into i: look again
            removed += 1
        else:
            i += 1
    return removed

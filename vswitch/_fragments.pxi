# Fragment verdicts (see _fragments.pxd): a first fragment that policy
# allowed is remembered; its later fragments pass on that. A first fragment
# too short to hold its transport header is not remembered, and a later
# fragment that would overlap the transport header (RFC 1858's tiny and
# overlapping fragment attacks) never passes on it. Written and read per
# frame; when the probe window is full, the entry nearest its end goes.


cdef int frags_init(frags_t *t, uint64_t seed) noexcept nogil:
    t.slots = <frag_entry_t *>calloc(FRAG_SLOTS, sizeof(frag_entry_t))
    t.multiplier, t.passed = seed | 1, 0
    return 0 if t.slots != NULL else -1


cdef void frags_free(frags_t *t) noexcept nogil:
    free(t.slots)
    t.slots = NULL


cdef inline uint64_t frag_home(const frags_t *t, const flow_t *f, uint16_t net) noexcept nogil:
    return ((f.src.lo ^ f.src.hi * 0x9E3779B97F4A7C15ULL ^ f.dst.lo * 0xBF58476D1CE4E5B9ULL ^
             f.dst.hi ^ (<uint64_t>f.frag_id << 24) ^ (<uint64_t>net << 8) ^ f.proto)
            * t.multiplier) >> 52                     # FRAG_SLOTS = 2^12


cdef inline bint frag_is(const frag_entry_t *e, const flow_t *f, uint16_t net) noexcept nogil:
    return e.network == net and e.id == f.frag_id and e.proto == f.proto and \
        key_eq(&e.src, &f.src) and key_eq(&e.dst, &f.dst)


cdef inline ssize_t transport_header_min(uint8_t proto) noexcept nogil:
    """What a first fragment must hold of its transport header for its
    verdict to carry (the ports and, for TCP, the flags)."""
    if proto == IPPROTO_TCP:
        return 20
    if proto == IPPROTO_UDP:
        return 8
    if proto == IPPROTO_SCTP:
        return 12
    return 8 if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6 else 0


cdef void frag_remember(frags_t *t, const flow_t *f, uint16_t net, uint32_t now_ms) noexcept nogil:
    """A first fragment was allowed: its later fragments will be."""
    if f.l4_len < transport_header_min(f.proto):
        return
    cdef uint64_t home = frag_home(t, f, net), i
    cdef frag_entry_t *e
    cdef frag_entry_t *victim = &t.slots[(home + FRAG_PROBE - 1) & (FRAG_SLOTS - 1)]
    cdef int k
    for k in range(FRAG_PROBE):
        e = &t.slots[(home + k) & (FRAG_SLOTS - 1)]
        if e.network == 0 or frag_is(e, f, net) or <int32_t>(now_ms - e.deadline_ms) >= 0:
            victim = e
            break
    victim.src, victim.dst, victim.id, victim.proto = f.src, f.dst, f.frag_id, f.proto
    victim.network, victim.deadline_ms = net, now_ms + FRAG_TIMEOUT_MS


cdef bint frag_allowed(frags_t *t, const flow_t *f, uint16_t net, uint32_t now_ms) noexcept nogil:
    """Whether a later fragment's first was allowed (and it overlaps none of
    its transport header)."""
    if f.frag_offset < transport_header_min(f.proto):
        return False
    cdef uint64_t home = frag_home(t, f, net)
    cdef const frag_entry_t *e
    cdef int k
    for k in range(FRAG_PROBE):
        e = &t.slots[(home + k) & (FRAG_SLOTS - 1)]
        if frag_is(e, f, net) and <int32_t>(now_ms - e.deadline_ms) < 0:
            t.passed += 1
            return True
    return False

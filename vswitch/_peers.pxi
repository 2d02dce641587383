# Peers and their network memberships (see _peers.pxd).


cdef int peers_init(peers_t *t) noexcept nogil:
    t.slots = <peer_t *>calloc(MAX_PEERS, sizeof(peer_t))
    t.addr = <sockaddr_in6 *>calloc(MAX_PEERS, sizeof(sockaddr_in6))
    t.addr_len = <uint32_t *>calloc(MAX_PEERS, sizeof(uint32_t))
    t.member_net = <uint16_t *>calloc(MAX_MEMBERS, sizeof(uint16_t))
    t.member_peer = <uint16_t *>calloc(MAX_MEMBERS, sizeof(uint16_t))
    t.member_bits = <uint8_t *>calloc(MAX_PEERS, MEMBER_BYTES)
    t.index = <int32_t *>malloc(PEER_INDEX * sizeof(int32_t))
    t.limit = t.n_members = t.n_learned = t.max_learned = 0
    t.udp_port = 0
    if t.slots == NULL or t.addr == NULL or t.addr_len == NULL or t.member_net == NULL \
            or t.member_peer == NULL or t.member_bits == NULL or t.index == NULL:
        return -1
    memset(t.index, 0xFF, PEER_INDEX * sizeof(int32_t))
    return pthread_mutex_init(&t.lock, NULL)


cdef void peers_free(peers_t *t) noexcept nogil:
    free(t.slots)
    free(t.addr)
    free(t.addr_len)
    free(t.member_net)
    free(t.member_peer)
    free(t.member_bits)
    free(t.index)
    t.index = NULL
    t.slots = NULL
    t.addr = NULL
    t.addr_len = NULL
    t.member_net = t.member_peer = NULL
    t.member_bits = NULL


cdef void peers_set_port(peers_t *t, uint16_t udp_port) noexcept nogil:
    cdef uint32_t i
    t.udp_port = udp_port
    for i in range(MAX_PEERS):
        t.addr[i].sin6_port = htons(udp_port)     # (where sin_port is, too)


cdef inline uint32_t peer_slot(const ip_key_t *ip) noexcept nogil:
    """Where an address's search in the index starts (multiplicative hash)."""
    return <uint32_t>(((ip.hi ^ ip.lo) * <uint64_t>0x9E3779B97F4A7C15ULL) >> 40) & (PEER_INDEX - 1)


cdef inline int64_t peer_find(const peers_t *t, const ip_key_t *ip) noexcept nogil:
    """A peer's index, or -1: once per datagram received, in constant time
    whatever the number of nodes; lock-free."""
    cdef unsigned s
    cdef int64_t found
    while True:
        s = seq_read_begin(&t.seq)
        found = _peer_find(t, ip)
        if not seq_read_retry(&t.seq, s):
            return found


cdef inline int64_t _peer_find(const peers_t *t, const ip_key_t *ip) noexcept nogil:
    cdef uint32_t h = peer_slot(ip), probes
    cdef int32_t i
    for probes in range(PEER_INDEX):
        i = t.index[h]
        if i < 0:
            return -1
        if key_eq(&t.slots[i].ip, ip):
            return i
        h = (h + 1) & (PEER_INDEX - 1)
    return -1


cdef void peer_index_add(peers_t *t, uint32_t idx) noexcept nogil:
    cdef uint32_t h = peer_slot(&t.slots[idx].ip)
    while t.index[h] >= 0:
        h = (h + 1) & (PEER_INDEX - 1)
    t.index[h] = idx


cdef void peer_index_rebuild(peers_t *t) noexcept nogil:
    """The index anew (after a peer is forgotten: open addressing has no
    simple delete; forgetting is the control plane's, and rare)."""
    cdef uint32_t i
    seq_write_begin(&t.seq)
    memset(t.index, 0xFF, PEER_INDEX * sizeof(int32_t))
    for i in range(t.limit):
        if not key_is_zero(&t.slots[i].ip):
            peer_index_add(t, i)
    seq_write_end(&t.seq)


cdef inline bint peer_is_member(const peers_t *t, uint32_t peer, uint16_t network) noexcept nogil:
    return t.member_bits[peer * MEMBER_BYTES + (network >> 3)] & (1 << (network & 7))


cdef inline void _set_member(peers_t *t, uint32_t peer, uint16_t network,
                             bint member) noexcept nogil:
    cdef uint8_t *byte = &t.member_bits[peer * MEMBER_BYTES + (network >> 3)]
    byte[0] = (byte[0] | (1 << (network & 7))) if member else (byte[0] & ~(1 << (network & 7)))


cdef int64_t peer_join(peers_t *t, ip_key_t ip, uint16_t network, bint learned) noexcept nogil:
    """Peer index of ip, created if new (learned: by learn_peers, within
    max_learned), now a member of network; -1 if a table is full. Writers'
    functions from here on: the caller holds the lock."""
    cdef int64_t idx = _peer_find(t, &ip)
    cdef uint32_t i
    if key_is_zero(&ip):            # zero marks a free slot
        return -1
    if idx < 0 and learned and t.n_learned >= t.max_learned:
        return -1
    if idx < 0:
        for i in range(MAX_PEERS):
            if key_is_zero(&t.slots[i].ip) and not t.slots[i].retiring:
                idx = i
                break
        if idx < 0:
            return -1
        seq_write_begin(&t.seq)
        memset(&t.slots[idx], 0, sizeof(peer_t))
        memset(t.member_bits + idx * MEMBER_BYTES, 0, MEMBER_BYTES)
        t.slots[idx].ip = ip
        t.slots[idx].learned = learned
        t.addr_len[idx] = sockaddr_of_key(&t.addr[idx], &ip, t.udp_port)
        if idx >= t.limit:
            t.limit = idx + 1
        peer_index_add(t, idx)
        seq_write_end(&t.seq)
        t.n_learned += learned
    elif not learned and t.slots[idx].learned:
        t.slots[idx].learned = False        # configured now: no longer ages
        t.n_learned -= 1
    if peer_is_member(t, idx, network):
        return idx
    if t.n_members == MAX_MEMBERS:
        return -1
    t.member_net[t.n_members] = network
    t.member_peer[t.n_members] = idx
    _set_member(t, idx, network, True)
    store_u32(&t.n_members, t.n_members + 1)     # after the entry: a reader sees it whole
    return idx


cdef uint32_t peer_leave(peers_t *t, uint32_t idx, uint16_t network) noexcept nogil:
    """Drop the peer's membership of network (0: all); returns how many
    memberships it has left."""
    cdef uint32_t i = 0, left = 0
    while i < t.n_members:
        if t.member_peer[i] == idx and (network == 0 or t.member_net[i] == network):
            _set_member(t, idx, t.member_net[i], False)
            store_u32(&t.n_members, t.n_members - 1)
            t.member_net[i] = t.member_net[t.n_members]
            t.member_peer[i] = t.member_peer[t.n_members]
            continue
        if t.member_peer[i] == idx:
            left += 1
        i += 1
    return left


cdef void peer_forget(peers_t *t, uint32_t idx, bint rebuild=True) noexcept nogil:
    """Free a peer's slot (it is in no network any more; reused after
    Datapath.reclaim); rebuild False: the caller rebuilds the index once,
    after forgetting many."""
    t.n_learned -= t.slots[idx].learned
    t.slots[idx].retiring = True
    seq_write_begin(&t.seq)
    t.slots[idx].ip.hi = t.slots[idx].ip.lo = 0
    seq_write_end(&t.seq)
    while t.limit > 0 and key_is_zero(&t.slots[t.limit - 1].ip):
        t.limit -= 1
    if rebuild:
        peer_index_rebuild(t)


cdef list network_peers(const peers_t *t, uint16_t network):
    """The peer indexes a network floods to, sorted."""
    cdef uint32_t m
    out = set()
    for m in range(t.n_members):
        if t.member_net[m] == network:
            out.add(t.member_peer[m])
    return sorted(out)

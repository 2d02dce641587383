# Neighbour table and ARP suppression (see _neigh.pxd): open addressing,
# linear probing and backward-shift deletion, keyed multiply-shift hash.
# The control plane fills it (cluster endpoints); the pipeline only reads
# it. Growing (a rehash) is a control-plane operation, never per frame.


cdef inline uint64_t neigh_home(const neigh_t *t, uint64_t network,
                                const ip_key_t *ip) noexcept nogil:
    return ((ip.hi * 0x9E3779B97F4A7C15ULL ^ ip.lo ^ network << 48) * t.multiplier) >> t.shift


cdef inline bint neigh_is(const neigh_entry_t *e, uint64_t network,
                          const ip_key_t *ip) noexcept nogil:
    return e.network == network and key_eq(&e.ip, ip)


cdef int neigh_alloc(neigh_t *t, uint64_t capacity) noexcept nogil:
    t.slots = <neigh_entry_t *>calloc(capacity, sizeof(neigh_entry_t))
    if t.slots == NULL:
        return -1
    t.mask = capacity - 1
    t.shift = 64
    while capacity > 1:
        capacity >>= 1
        t.shift -= 1
    t.count = 0
    return 0


cdef int neigh_init(neigh_t *t, uint64_t seed) noexcept nogil:
    memset(t, 0, sizeof(neigh_t))
    t.multiplier = seed | 1
    return neigh_alloc(t, NEIGH_MIN_SLOTS)


cdef void neigh_free(neigh_t *t) noexcept nogil:
    """(The table is neigh_alloc's; old ones neigh_set left are the caller's.)"""
    free(t.slots)
    t.slots = NULL


cdef inline int64_t neigh_slot(const neigh_t *t, uint64_t network, const ip_key_t *ip) noexcept nogil:
    """The slot holding (network, ip), or the empty slot where it would go
    (the table is never full: at most half its slots are used)."""
    cdef uint64_t i = neigh_home(t, network, ip)
    while t.slots[i].network != 0 and not neigh_is(&t.slots[i], network, ip):
        i = (i + 1) & t.mask
    return i


cdef inline uint64_t neigh_lookup(const neigh_t *t, uint16_t network,
                                  const ip_key_t *ip) noexcept nogil:
    """The MAC of (network, ip), or 0 when unknown (lock-free)."""
    cdef unsigned s
    cdef uint64_t mac
    cdef neigh_entry_t *e
    while True:
        s = seq_read_begin(&t.seq)
        e = &t.slots[neigh_slot(t, network, ip)]
        mac = e.mac if e.network != 0 else 0
        if not seq_read_retry(&t.seq, s):
            return mac


cdef int neigh_set(neigh_t *t, uint16_t network, const ip_key_t *ip, uint64_t mac,
                   neigh_entry_t **old) noexcept nogil:
    """Add or overwrite an entry (doubling the table past half full: the
    old slots are left in *old, for the caller to free once no worker reads
    them); -1: no memory."""
    cdef neigh_t bigger
    cdef uint64_t i
    cdef neigh_entry_t *e
    old[0] = NULL
    if 2 * (t.count + 1) > t.mask + 1:
        bigger = t[0]
        if neigh_alloc(&bigger, 2 * (t.mask + 1)) < 0:
            return -1
        for i in range(t.mask + 1):
            if t.slots[i].network != 0:
                bigger.slots[neigh_slot(&bigger, t.slots[i].network, &t.slots[i].ip)] = t.slots[i]
                bigger.count += 1
        old[0] = t.slots
        seq_write_begin(&t.seq)
        t.slots, t.mask, t.shift, t.count = bigger.slots, bigger.mask, bigger.shift, bigger.count
        seq_write_end(&t.seq)
    e = &t.slots[neigh_slot(t, network, ip)]
    if e.network == 0:
        t.count += 1
    seq_write_begin(&t.seq)
    e.ip, e.mac, e.network = ip[0], mac, network
    seq_write_end(&t.seq)
    return 0


cdef bint neigh_delete(neigh_t *t, uint16_t network, const ip_key_t *ip) noexcept nogil:
    """Remove an entry (backward shift: no tombstones); whether it was there."""
    cdef uint64_t i = neigh_slot(t, network, ip), j, home
    if t.slots[i].network == 0:
        return False
    j = i
    seq_write_begin(&t.seq)
    while True:
        j = (j + 1) & t.mask
        if t.slots[j].network == 0:
            break
        home = neigh_home(t, t.slots[j].network, &t.slots[j].ip)
        # Move j back into the hole at i unless its home lies after i (cyclically).
        if ((j - home) & t.mask) >= ((j - i) & t.mask):
            t.slots[i] = t.slots[j]
            i = j
    memset(&t.slots[i], 0, sizeof(neigh_entry_t))
    seq_write_end(&t.seq)
    t.count -= 1
    return True


cdef inline uint64_t arp_request_target(const neigh_t *t, uint16_t network,
                                        const unsigned char *frame, ssize_t n) noexcept nogil:
    """For an untagged IPv4-over-Ethernet ARP request whose target the table
    knows, that target's MAC; else 0. Gratuitous ARP and probes (sender
    0.0.0.0 or the target itself, RFC 5227) are left to flood: they ask
    whether anyone else has the address."""
    if t.count == 0 or n < ARP_FRAME_LEN or be16(frame + 12) != ETH_P_ARP:
        return 0
    cdef const unsigned char *arp = frame + ETH_HLEN
    if be32(arp) != 0x00010800 or arp[4] != 6 or arp[5] != 4 or be16(arp + 6) != 1:
        return 0
    cdef uint32_t spa = be32(arp + 14), tpa = be32(arp + 24)
    if spa == 0 or spa == tpa:
        return 0
    cdef ip_key_t target = key_of_ip4(tpa)
    return neigh_lookup(t, network, &target)


cdef unsigned char *arp_reply(unsigned char *reply, const unsigned char *request,
                              uint64_t target_mac) noexcept nogil:
    """The answer to an ARP request (checked by arp_request_target) in
    reply (a worker's), after its zero virtio-net header: target_mac has the
    target address. Returns where the Ethernet frame starts."""
    cdef unsigned char *f = reply + VNET_HLEN
    cdef const unsigned char *req = request + ETH_HLEN
    memset(reply, 0, VNET_HLEN)
    memcpy(f, request + 6, 6)                   # to the asker
    put_mac(f + 6, target_mac)
    put16(f + 12, ETH_P_ARP)
    memcpy(f + ETH_HLEN, req, 6)                # htype, ptype, hlen, plen
    put16(f + ETH_HLEN + 6, 2)                  # reply
    put_mac(f + ETH_HLEN + 8, target_mac)       # sender: the target
    memcpy(f + ETH_HLEN + 14, req + 24, 4)
    memcpy(f + ETH_HLEN + 18, req + 8, 10)      # target: the asker's MAC and address
    return f


cdef inline uint64_t nd_request_target(const neigh_t *t, uint16_t network,
                                       const unsigned char *frame, ssize_t n) noexcept nogil:
    """For an untagged Neighbor Solicitation (no extension headers, hop
    limit 255) whose target the table knows, that target's MAC; else 0.
    Duplicate address detection (source ::) is left to flood: it asks
    whether anyone else has the address."""
    if t.count == 0 or n < ETH_HLEN + 40 + 24 or be16(frame + 12) != ETH_P_IPV6:
        return 0
    cdef const unsigned char *ip = frame + ETH_HLEN
    if ip[6] != IPPROTO_ICMPV6 or ip[7] != 255 or ip[40] != ICMPV6_NEIGHBOR_SOLICITATION \
            or be64(ip + 8) | be64(ip + 16) == 0:
        return 0
    cdef ip_key_t target = key_of_ip6(ip + 48)
    if key_is_v4(&target):                      # ::ffff:0:0/96 is IPv4's part of the table
        return 0
    return neigh_lookup(t, network, &target)


cdef unsigned char *na_reply(unsigned char *reply, const unsigned char *request,
                             uint64_t target_mac) noexcept nogil:
    """The Neighbor Advertisement answering a solicitation (checked by
    nd_request_target) in reply, after its zero virtio-net header:
    solicited and override, from the target to the asker, with the
    target's MAC as its link-layer address. Returns where the frame starts."""
    cdef unsigned char *f = reply + VNET_HLEN
    cdef const unsigned char *req = request + ETH_HLEN
    memset(reply, 0, VNET_HLEN + NA_FRAME_LEN)
    memcpy(f, request + 6, 6)                   # to the asker
    put_mac(f + 6, target_mac)
    put16(f + 12, ETH_P_IPV6)
    cdef unsigned char *ip = f + ETH_HLEN
    cdef unsigned char *icmp = ip + 40
    ip[0], ip[6], ip[7] = 0x60, IPPROTO_ICMPV6, 255
    put16(ip + 4, 32)
    memcpy(ip + 8, req + 48, 16)                # from the target address
    memcpy(ip + 24, req + 8, 16)                # to the asker's
    icmp[0], icmp[4] = ICMPV6_NEIGHBOR_ADVERTISEMENT, 0x60      # solicited, override
    memcpy(icmp + 8, req + 48, 16)
    icmp[24], icmp[25] = ND_TARGET_LL_ADDR, 1
    put_mac(icmp + 26, target_mac)
    put16(icmp + 2, csum_fold(csum_add(csum_add(IPPROTO_ICMPV6 + 32, ip + 8, 32), icmp, 32)))
    return f

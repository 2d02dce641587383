# NetworkPolicy in the data plane (see _policy.pxd): what a packet is, the
# rule walk of a pod's compiled tables, and the verdict with conntrack.
# Established connections pass on one conntrack lookup; only a connection's
# first packet (or its first after a policy change) walks the rules.


cdef inline void flow_ports(flow_t *f, const unsigned char *l4, ssize_t rem) noexcept nogil:
    """Ports (TCP, UDP, SCTP) or the ICMP echo identifier of an unfragmented
    (or first-fragment) payload of rem bytes. An echo request and its
    reply get the same connection: the identifier is the requester's port."""
    if f.proto == IPPROTO_TCP or f.proto == IPPROTO_UDP or f.proto == IPPROTO_SCTP:
        if rem >= 4:
            f.sport, f.dport, f.has_ports = be16(l4), be16(l4 + 2), True
        if f.proto == IPPROTO_TCP and rem >= 14:
            f.tcp_flags = l4[13]
    elif (f.proto == IPPROTO_ICMP or f.proto == IPPROTO_ICMPV6) and rem >= 8:
        if l4[0] == 8 or l4[0] == 128:          # echo request (ICMP, ICMPv6)
            f.sport = be16(l4 + 4)
        elif l4[0] == 0 or l4[0] == 129:        # echo reply
            f.dport = be16(l4 + 4)


cdef inline bint ip4_header(const unsigned char *ip, ssize_t avail, ssize_t *ihl) noexcept nogil:
    """Whether avail bytes at ip start a well-formed IPv4 header (its length in ihl)."""
    if avail < IP4_HLEN or ip[0] >> 4 != 4:
        return False
    ihl[0] = (ip[0] & 0x0F) * 4
    return IP4_HLEN <= ihl[0] <= avail


cdef inline bint ip_packet(flow_t *f, const unsigned char *ip, ssize_t avail, bint v6,
                           ssize_t *l4) noexcept nogil:
    """The protocol and addresses of the IPv4 (or v6: IPv6) packet of avail
    bytes at ip, where its payload starts (l4), whether it is a fragment,
    and whether it has a payload with a header in it (not a later
    fragment). f.kind: FLOW_IP, or FLOW_OTHER when it cannot be parsed, or
    is IPv6 naming IPv4-mapped addresses (which would pass for IPv4 ones in
    the tables)."""
    cdef ssize_t ihl
    cdef int proto
    cdef bint later
    cdef uint16_t frag
    cdef const unsigned char *fh = NULL
    f.kind = FLOW_OTHER
    if not v6:
        if not ip4_header(ip, avail, &ihl):
            return False
        f.kind, f.proto = FLOW_IP, ip[9]
        f.src, f.dst = key_of_ip4(be32(ip + 12)), key_of_ip4(be32(ip + 16))
        l4[0] = ihl
        frag = be16(ip + 6)
        f.frag_id, f.frag_offset = be16(ip + 4), (frag & 0x1FFF) * 8
        f.later_fragment = f.frag_offset != 0
        f.first_fragment = not f.later_fragment and frag & 0x2000
        return not f.later_fragment
    if avail < IP6_HLEN or ip[0] >> 4 != 6:
        return False
    proto = ip6_upper_layer(ip, avail, l4, &later, &fh)
    f.src, f.dst = key_of_ip6(ip + 8), key_of_ip6(ip + 24)
    if proto < 0 or key_is_v4(&f.src) or key_is_v4(&f.dst):
        return False
    f.kind, f.proto = FLOW_IP, proto
    if fh != NULL:
        f.frag_id, f.frag_offset = be32(fh + 4), be16(fh + 2) & 0xFFF8
        f.later_fragment = later
        f.first_fragment = not later and fh[3] & 1
    return not later


cdef inline bint icmp_error(uint8_t proto, uint8_t icmp_type) noexcept nogil:
    """Whether an ICMP message is an error carrying the head of the packet it is about."""
    if proto == IPPROTO_ICMP:
        return icmp_type in (3, 4, 5, 11, 12)
    return proto == IPPROTO_ICMPV6 and 1 <= icmp_type <= 4


cdef void flow_parse(flow_t *f, uint16_t net, const unsigned char *frame, ssize_t n,
                     ssize_t l2) noexcept nogil:
    """What a frame is for policy and conntrack."""
    memset(f, 0, sizeof(flow_t))
    cdef uint16_t ethertype = be16(frame + l2 - 2)
    cdef const unsigned char *ip = frame + l2
    cdef ssize_t l4, inner_l4, rem
    cdef flow_t inner
    if ethertype == ETH_P_ARP:
        f.kind = FLOW_ALWAYS
        return
    if ethertype != ETH_P_IP and ethertype != ETH_P_IPV6:
        return
    if not ip_packet(f, ip, n - l2, ethertype == ETH_P_IPV6, &l4):
        return                  # not parsed, or a later fragment: its first's verdict, or none
    rem = n - l2 - l4
    f.l4_len = rem
    if f.proto == IPPROTO_ICMPV6 and rem >= 1 and 133 <= ip[l4] <= 136:
        # Neighbour discovery (RS, RA, NS, NA) keeps the link working; RA
        # guard and port security have checked it already.
        f.kind = FLOW_ALWAYS
        return
    flow_ports(f, ip + l4, rem)
    if rem >= 8 and icmp_error(f.proto, ip[l4]):
        memset(&inner, 0, sizeof(flow_t))
        if ip_packet(&inner, ip + l4 + 8, rem - 8, ethertype == ETH_P_IPV6, &inner_l4):
            flow_ports(&inner, ip + l4 + 8 + inner_l4, rem - 8 - inner_l4)
        if inner.kind == FLOW_IP:
            f.icmp_error = True
            f.inner_proto, f.inner_src, f.inner_dst = inner.proto, inner.src, inner.dst
            f.inner_sport, f.inner_dport = inner.sport, inner.dport


cdef inline uint32_t pol_match(const pol_dir_t *d, const ip_key_t *peer,
                               const flow_t *f) noexcept nogil:
    """The policy (id) of a rule of d allowing the flow with the peer at
    `peer`, or 0: groups in order, ports first, then a binary search of the
    peer ranges."""
    cdef uint32_t g, j, lo, hi, mid
    cdef const pol_group_t *grp
    cdef const pol_l4_t *l4
    cdef bint ports_ok
    for g in range(d.n_groups):
        grp = &d.groups[g]
        if grp.n_l4:
            ports_ok = False
            if f.has_ports:
                for j in range(grp.first_l4, grp.first_l4 + grp.n_l4):
                    l4 = &d.l4[j]
                    if l4.proto == f.proto and l4.lo <= f.dport <= l4.hi:
                        ports_ok = True
                        break
            if not ports_ok:
                continue
        lo, hi = grp.first_range, grp.first_range + grp.n_ranges
        while lo < hi:                      # the first range starting above peer
            mid = (lo + hi) >> 1
            if not key_lt(peer, &d.ranges[mid].lo):
                lo = mid + 1
            else:
                hi = mid
        if lo > grp.first_range and not key_lt(&d.ranges[lo - 1].hi, peer):
            return d.ranges[lo - 1].policy
    return 0


cdef inline bint pol_isolates(const pol_end_t *end, int direction) noexcept nogil:
    return end.policy != NULL and end.policy.dirs[direction].isolating != 0


cdef void pol_rules(const pol_end_t *src, const pol_end_t *dst, const flow_t *f,
                    verdict_t *v) noexcept nogil:
    """A new connection from src to dst under the rules: egress for src's
    pod, then ingress for dst's, each where isolated. The node (its own
    address behind the host port) reaches its pods whatever their ingress
    rules; a Service address is no destination of egress rules: the packet
    comes back from the node DNATed, and egress judges the backend then."""
    cdef uint32_t m
    cdef const pol_dir_t *d
    v.reason, v.policy, v.direction = -1, 0, POL_INGRESS
    if pol_isolates(src, POL_EGRESS) and not dst.service:
        d = &src.policy.dirs[POL_EGRESS]
        m = pol_match(d, &f.dst, f) if f.kind == FLOW_IP else 0
        v.direction, v.policy = POL_EGRESS, m if m else d.isolating
        if m == 0:
            v.reason = DROP_POLICY_DENIED
            return
    if pol_isolates(dst, POL_INGRESS) and not src.node:
        d = &dst.policy.dirs[POL_INGRESS]
        m = pol_match(d, &f.src, f) if f.kind == FLOW_IP else 0
        v.direction, v.policy = POL_INGRESS, m if m else d.isolating
        if m == 0:
            v.reason = DROP_POLICY_DENIED


cdef inline bint pol_related(const flow_t *f, const pol_end_t *src) noexcept nogil:
    """Whether an ICMP error may be about the connection it quotes, as
    Linux's conntrack has it: sent to the quoted packet's source, by its
    destination or by a router on the way (from a host port, from an
    address no local pod holds)."""
    return f.icmp_error and key_eq(&f.dst, &f.inner_src) and \
        (key_eq(&f.src, &f.inner_dst) or (src.host and src.pod == NULL))


cdef void policy_decide(ct_t *ct, frags_t *frags, const pol_path_t *path, const flow_t *f,
                        uint16_t net, uint32_t now_ms, bint commit, verdict_t *v) noexcept nogil:
    """The verdict on a packet of a network along path. commit: track a new
    connection and refresh a known one (the pipeline); trace only looks."""
    v.reason, v.how, v.policy, v.direction = -1, HOW_OPEN, 0, POL_INGRESS
    cdef const pol_end_t *src = &path.src
    cdef const pol_end_t *dst = &path.dst
    if src.policy == NULL and dst.policy == NULL:
        return
    if f.kind == FLOW_ALWAYS:
        v.how = HOW_ALWAYS
        return
    v.how = HOW_RULES
    if f.kind != FLOW_IP:
        pol_rules(src, dst, f, v)           # matches nothing: denied where isolated
        return
    if f.later_fragment and frag_allowed(frags, f, net, now_ms):
        v.how = HOW_FRAGMENT
        return
    cdef const ip_key_t *beside = &f.dst if src.host else &f.src if dst.host else NULL
    cdef bint src_is_a
    cdef ct_key_t key = ct_key(net, f.proto, &f.src, f.sport, &f.dst, f.dport, beside, &src_is_a)
    cdef ct_entry_t *e = ct_find(ct, &key, now_ms)
    cdef flow_t back
    cdef int reason
    if e != NULL:
        if e.generation == ct.generation:
            v.how = HOW_CONNTRACK
            if commit:
                ct_touch(e, f, src_is_a, now_ms)
        else:
            # Policy changed since it was allowed: ask again, in its first direction.
            v.how = HOW_REVALIDATED
            if src_is_a == <bint>(e.flags & CT_ORIG_A):
                pol_rules(src, dst, f, v)
            else:
                back = f[0]
                back.src, back.dst, back.sport, back.dport = f.dst, f.src, f.dport, f.sport
                pol_rules(dst, src, &back, v)
            if commit and v.reason >= 0:
                ct_delete(ct, e)
                ct.revoked += 1
            elif commit:
                e.generation = ct.generation
                ct_touch(e, f, src_is_a, now_ms)
    elif pol_related(f, src) and ct_related(ct, f, net, beside, now_ms):
        v.how = HOW_RELATED
    else:
        pol_rules(src, dst, f, v)
        if v.reason < 0 and commit:
            e = ct_insert(ct, &key, src_is_a, path.in_port, path.out_port, path.owner, now_ms,
                          &reason)
            if e == NULL:
                v.reason = reason
            else:
                ct_touch(e, f, src_is_a, now_ms)
    if v.reason < 0 and commit and f.first_fragment:
        frag_remember(frags, f, net, now_ms)


cdef inline bint is_service(const services_t *s, const ip_key_t *k) noexcept nogil:
    cdef uint32_t i, seq
    cdef bint found
    while True:
        seq = seq_read_begin(&s.seq)
        found = False
        for i in range(min(s.n, MAX_SERVICE_RANGES)):
            if not key_lt(k, &s.lo[i]) and not key_lt(&s.hi[i], k):
                found = True
                break
        if not seq_read_retry(&s.seq, seq):
            return found


cdef inline bint ct_related(const ct_t *ct, const flow_t *f, uint16_t net, const ip_key_t *beside,
                            uint32_t now_ms) noexcept nogil:
    """Whether the connection an ICMP error quotes is tracked and allowed."""
    cdef bint ignored
    cdef ct_key_t key = ct_key(net, f.inner_proto, &f.inner_src, f.inner_sport, &f.inner_dst,
                               f.inner_dport, beside, &ignored)
    cdef const ct_entry_t *e = ct_find(ct, &key, now_ms)
    return e != NULL and e.generation == ct.generation


# ------------------------------------------------------- control plane side

cdef void pol_dir_free(pol_dir_t *d) noexcept nogil:
    free(d.groups)
    free(d.ranges)
    free(d.l4)
    memset(d, 0, sizeof(pol_dir_t))


cdef void port_policy_free(port_policy_t *p) noexcept nogil:
    if p != NULL:
        pol_dir_free(&p.dirs[POL_INGRESS])
        pol_dir_free(&p.dirs[POL_EGRESS])
        free(p)


cdef int pol_dir_build(pol_dir_t *d, spec) except -1:
    """Fill d from (isolating policy id, [(ranges, l4)]): ranges
    [(lo, hi, policy id)] sorted and disjoint, addresses as 128-bit
    integers (IPv4 mapped), l4 [(protocol, lo, hi)]
    (empty: every protocol and port)."""
    isolating, groups = spec
    n_ranges = sum(len(r) for r, _ in groups)
    n_l4 = sum(len(p) for _, p in groups)
    d.isolating, d.n_groups = isolating, len(groups)
    d.groups = <pol_group_t *>calloc(max(len(groups), 1), sizeof(pol_group_t))
    d.ranges = <pol_range_t *>calloc(max(n_ranges, 1), sizeof(pol_range_t))
    d.l4 = <pol_l4_t *>calloc(max(n_l4, 1), sizeof(pol_l4_t))
    if d.groups == NULL or d.ranges == NULL or d.l4 == NULL:
        raise MemoryError()
    if not 0 < isolating <= 0xFFFFFFFF:
        raise ValueError("the isolating policy id must be 1..2^32-1")
    cdef uint32_t r = 0, k = 0, g
    for g, (ranges, l4) in enumerate(groups):
        d.groups[g].first_range, d.groups[g].n_ranges = r, len(ranges)
        d.groups[g].first_l4, d.groups[g].n_l4 = k, len(l4)
        last = -1
        for lo, hi, policy in ranges:
            if not last < lo <= hi < 1 << 128 or not 0 < policy <= 0xFFFFFFFF:
                raise ValueError("peer ranges must be sorted, disjoint, with policy ids >= 1")
            d.ranges[r].lo, d.ranges[r].hi = key_from_int(lo), key_from_int(hi)
            d.ranges[r].policy = policy
            last = hi
            r += 1
        for proto, lo, hi in l4:
            if not 0 <= proto <= 255 or not 0 <= lo <= hi <= 65535:
                raise ValueError(f"bad protocol {proto} or ports {lo}..{hi}")
            d.l4[k].proto, d.l4[k].lo, d.l4[k].hi = proto, lo, hi
            k += 1
    return 0


cdef port_policy_t *port_policy_build(ingress, egress) except? NULL:
    """A pod's tables (None for an open direction); NULL when both are open."""
    if ingress is None and egress is None:
        return NULL
    cdef port_policy_t *p = <port_policy_t *>calloc(1, sizeof(port_policy_t))
    if p == NULL:
        raise MemoryError()
    try:
        if ingress is not None:
            pol_dir_build(&p.dirs[POL_INGRESS], ingress)
        if egress is not None:
            pol_dir_build(&p.dirs[POL_EGRESS], egress)
    except BaseException:
        port_policy_free(p)
        raise
    return p

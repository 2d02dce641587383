# Benchmark probes (bench/micro.py): the pipeline's per-frame work, tunnel
# encapsulation, tunnel ingress checks and TSO segmentation timed without
# syscalls. Module functions over a Datapath, not part of it: they call the
# same C functions the pipeline does.


def pipeline_cost(Datapath dp, uint32_t port_id, bytes frames, int frame_len, int rounds=1):
    """The fast path's per-frame work without its syscalls: the pipeline
    itself (Datapath._switch) over every frame_len-byte frame of `frames`,
    `rounds` times, on a worker whose sink keeps no step (as a trace: it
    looks the source up instead of learning it, and records instead of
    sending). Returns (nanoseconds, steps taken, so that the work cannot be
    skipped)."""
    cdef port_t *inp = dp._port(port_id)
    cdef uint16_t net = inp.network
    cdef const unsigned char *buf = frames
    cdef ssize_t count = len(frames) // frame_len, i
    cdef unsigned char *slot = <unsigned char *>malloc(FRAME_HEADROOM + frame_len)
    cdef trace_t sink
    cdef worker_t tw
    if slot == NULL:
        raise MemoryError()
    sink.steps, sink.n, sink.size = NULL, 0, 0
    memset(&tw, 0, sizeof(worker_t))
    tw.tx, tw.rx, tw.trace = dp.w.tx, dp.w.rx, &sink
    cdef unsigned char *f = slot + FRAME_HEADROOM
    memset(f - VNET_HLEN, 0, VNET_HLEN)
    cdef uint64_t start, now
    cdef int r
    with nogil:
        start = monotonic_ns()
        for r in range(rounds):
            now = monotonic_ns()
            for i in range(count):
                memcpy(f, buf + i * frame_len, frame_len)   # the pipeline may write the frame
                dp._switch(&tw, port_id, inp, net, f - VNET_HLEN, f, frame_len, now)
        now = monotonic_ns()
    free(slot)
    return now - start, sink.n


def learn_sources(Datapath dp, uint32_t port_id, bytes frames, int frame_len):
    """Learn the source MAC of every frame_len-byte frame of `frames` as
    arriving on port_id, as the pipeline does (a bench's table, filled)."""
    cdef port_t *inp = dp._port(port_id)
    cdef const unsigned char *buf = frames
    cdef ssize_t i, count = len(frames) // frame_len
    cdef uint64_t now = monotonic_ns()
    with nogil:
        for i in range(count):
            fdb_learn(&dp.fdb, inp.network, mac48(buf + i * frame_len + 6), port_id, now)


def encap_cost(Datapath dp, int network, bytes frames, int frame_len, int rounds=1):
    """VXLAN encapsulation of every frame_len-byte frame of `frames` as the
    pipeline queues it for a peer (header, flow hash picking the source
    port, the datagram's iovecs, grouping into messages), without sending,
    `rounds` times: nanoseconds."""
    cdef const unsigned char *buf = frames
    cdef ssize_t count = len(frames) // frame_len, i
    cdef uint32_t saved = dp.w.tx.n_senders, vni = dp.networks.vni_of[network]
    cdef uint64_t start, end
    cdef int r
    dp._flush_output(dp.w)
    dp.w.tx.n_senders = saved or 1
    with nogil:
        start = monotonic_ns()
        for r in range(rounds):
            for i in range(count):
                if dp.w.tx.n_pending == MAX_PENDING:
                    dp.w.tx.n_pending = dp.w.tx.n_msgs = 0        # dropped unsent
                tunnel_queue(&dp.w.tx, 0, vni, buf + i * frame_len,
                             <unsigned char *>buf + i * frame_len, frame_len, NULL, 0)
        end = monotonic_ns()
    dp.w.tx.n_pending = dp.w.tx.n_msgs = 0
    dp.w.tx.n_senders = saved
    return end - start


def decap_cost(Datapath dp, peer_ip, bytes datagrams, int length, int rounds=1):
    """The tunnel ingress checks of every length-byte VXLAN datagram of
    `datagrams` (peer lookup, header, VNI to network), without switching
    the inner frame, `rounds` times: (nanoseconds, frames accepted)."""
    cdef const unsigned char *buf = datagrams
    cdef ssize_t count = len(datagrams) // length, i
    cdef uint64_t start, end, accepted = 0
    cdef int64_t vni
    cdef int r
    cdef ip_key_t peer = key_from_int(peer_ip)
    with nogil:
        start = monotonic_ns()
        for r in range(rounds):
            for i in range(count):
                if peer_find(&dp.peers, &peer) < 0:
                    continue
                vni = vxlan_vni(buf + i * length)
                if vni >= 0 and network_of_vni(&dp.networks, vni) != 0:
                    accepted += 1
        end = monotonic_ns()
    return end - start, accepted


def segment_cost(bytes superframe, int rounds=1):
    """Cutting one TCP superframe (virtio_net_hdr + frame) into segments as
    the tunnel path does (headers per segment, full TCP checksums; the
    payload is referenced, not copied), `rounds` times: (nanoseconds,
    segments per superframe)."""
    cdef const unsigned char *hdr = superframe
    cdef const unsigned char *frame = hdr + VNET_HLEN
    cdef ssize_t n = len(superframe) - VNET_HLEN, l2, hlen, off, size, gso_size
    cdef unsigned char seg[SEG_HDR_MAX]
    cdef uint32_t index = 0
    cdef uint64_t start, end
    cdef int r
    if n <= 0 or not vnet_is_gso(hdr):
        raise ValueError("not a superframe")
    l2 = eth_header_len(frame, n)
    hlen = tso_header_len(hdr, frame, n, l2)
    gso_size = le16(hdr + 4)
    if hlen < 0 or hlen > SEG_HDR_MAX or gso_size == 0:
        raise ValueError("not a TCP superframe")
    with nogil:
        start = monotonic_ns()
        for r in range(rounds):
            off, index = hlen, 0
            while off < n:
                size = min(gso_size, n - off)
                tso_segment_headers(seg, hdr, frame, l2, hlen, index, frame + off, size,
                                    off + size >= n)
                off += size
                index += 1
        end = monotonic_ns()
    return end - start, index


def conntrack_cost(uint64_t flows, uint64_t lookups, bint ipv6=False):
    """Connection tracking as an established packet meets it: `flows` UDP
    connections (between IPv4 or IPv6 addresses) in a table sized for them,
    then `lookups` packets of random ones, looked up (key and lookup), then
    looked up and their entries updated (state, deadline). Returns (lookup ns, lookup + update ns, hits
    of each pass, bytes of table per connection)."""
    cdef ct_t t
    memset(&t, 0, sizeof(ct_t))
    rnd = int.from_bytes(os.urandom(16), "little")
    if ct_init(&t, flows, rnd & 0xFFFFFFFFFFFFFFFF) < 0:
        raise MemoryError()
    cdef flow_t *fl = <flow_t *>calloc(flows, sizeof(flow_t))
    # The packets in arrival order: read in sequence, as frames are (only the
    # table is accessed at random).
    cdef flow_t *packets = <flow_t *>malloc(lookups * sizeof(flow_t))
    cdef uint64_t i, hits = 0, x = (rnd & 0xFFFFFFFFFFFF) | 1, start, middle, end
    cdef bint src_is_a
    cdef int reason
    cdef ct_key_t k
    cdef ct_entry_t *e
    cdef uint32_t now_ms = ms32(monotonic_ns())
    cdef uint32_t net18 = 0xC6120000, net19 = 0xC6130000   # 198.18/16, 198.19/16
    if fl == NULL or packets == NULL:
        free(fl)
        free(packets)
        ct_free(&t)
        raise MemoryError()
    with nogil:
        for i in range(flows):          # distinct: the index is in the addresses
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            fl[i].kind, fl[i].proto = FLOW_IP, IPPROTO_UDP
            fl[i].src, fl[i].dst = key_of_ip4(net18 | (i & 0xFFFF)), key_of_ip4(net19 | (i >> 16))
            if ipv6:                    # 2001:db8:18::/64 and 2001:db8:19::/64
                fl[i].src.hi, fl[i].src.lo = 0x20010DB800180000ULL, <uint32_t>fl[i].src.lo
                fl[i].dst.hi, fl[i].dst.lo = 0x20010DB800190000ULL, <uint32_t>fl[i].dst.lo
            fl[i].sport, fl[i].dport, fl[i].has_ports = x & 0xFFFF, 53, True
            k = ct_key(1, fl[i].proto, &fl[i].src, fl[i].sport, &fl[i].dst, fl[i].dport, NULL,
                       &src_is_a)
            e = ct_insert(&t, &k, src_is_a, 0, 1, 0, now_ms, &reason)
            ct_touch(e, &fl[i], src_is_a, now_ms)
        for i in range(lookups):
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            packets[i] = fl[x % flows]
        start = monotonic_ns()
        for i in range(lookups):
            k = ct_key(1, packets[i].proto, &packets[i].src, packets[i].sport, &packets[i].dst,
                       packets[i].dport, NULL, &src_is_a)
            hits += ct_find(&t, &k, now_ms) != NULL
        middle = monotonic_ns()
        now_ms += CT_REFRESH_MS             # a second later: every entry is written
        for i in range(lookups):
            k = ct_key(1, packets[i].proto, &packets[i].src, packets[i].sport, &packets[i].dst,
                       packets[i].dport, NULL, &src_is_a)
            e = ct_find(&t, &k, now_ms)
            if e != NULL:
                hits += 1
                ct_touch(e, &packets[i], src_is_a, now_ms)
        end = monotonic_ns()
    per_flow = (t.mask + 1) * sizeof(ct_entry_t) / flows
    free(fl)
    free(packets)
    ct_free(&t)
    return middle - start, end - middle, hits // 2, per_flow

# Capture (see _capture.pxd): frames matching a session's points, port and
# classic-BPF filter are copied into a ring the control plane drains. With
# no session active the data plane tests one integer and calls none of this.

cdef inline uint32_t _bpf_load(const unsigned char *p, uint32_t off, uint32_t size) noexcept nogil:
    if size == 4:
        return (<uint32_t>p[off] << 24) | (<uint32_t>p[off + 1] << 16) | \
               (<uint32_t>p[off + 2] << 8) | p[off + 3]
    if size == 2:
        return (<uint32_t>p[off] << 8) | p[off + 1]
    return p[off]


cdef uint32_t bpf_run(const bpf_insn_t *prog, uint32_t plen, const unsigned char *pkt,
                      uint32_t wirelen, uint32_t buflen) noexcept nogil:
    """Run a classic BPF program (Linux/libpcap semantics) over a packet;
    returns the snap length it answers, 0 = no match. Jumps only go
    forward, so it always ends."""
    cdef uint32_t A = 0, X = 0, pc = 0, k, src, off, size
    cdef uint32_t mem[BPF_MEMWORDS]
    cdef uint16_t code, cls, op
    memset(mem, 0, sizeof(mem))
    while pc < plen:
        code, k = prog[pc].code, prog[pc].k
        cls = code & 0x07
        if cls == 0x06:                                     # RET
            return A if (code & 0x18) == 0x10 else k
        if cls == 0x00 or cls == 0x01:                      # LD, LDX
            op = code & 0xE0
            if op == 0x00:                                  # IMM
                src = k
            elif op == 0x80:                                # LEN
                src = wirelen
            elif op == 0x60:                                # MEM
                src = mem[k % BPF_MEMWORDS]
            elif op == 0xA0 and cls == 0x01:                # MSH: 4 * (P[k] & 0xf)
                if k >= buflen:
                    return 0
                src = (pkt[k] & 0x0F) * 4
            elif op == 0x20 or op == 0x40:                  # ABS, IND
                size = 4 if (code & 0x18) == 0x00 else 2 if (code & 0x18) == 0x08 else 1
                off = k + (X if op == 0x40 else 0)
                if off < k or off > buflen or buflen - off < size:
                    return 0
                src = _bpf_load(pkt, off, size)
            else:
                return 0
            if cls == 0x00:
                A = src
            else:
                X = src
        elif cls == 0x02:                                   # ST
            mem[k % BPF_MEMWORDS] = A
        elif cls == 0x03:                                   # STX
            mem[k % BPF_MEMWORDS] = X
        elif cls == 0x04:                                   # ALU
            src = X if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:
                A += src
            elif op == 0x10:
                A -= src
            elif op == 0x20:
                A *= src
            elif op == 0x30:
                if src == 0:
                    return 0
                A //= src
            elif op == 0x90:
                if src == 0:
                    return 0
                A %= src
            elif op == 0x40:
                A |= src
            elif op == 0x50:
                A &= src
            elif op == 0xA0:
                A ^= src
            elif op == 0x60:
                A = A << src if src < 32 else 0
            elif op == 0x70:
                A = A >> src if src < 32 else 0
            elif op == 0x80:
                A = -A
            else:
                return 0
        elif cls == 0x05:                                   # JMP
            op = code & 0xF0
            if op == 0x00:
                pc += k
            else:
                src = X if code & 0x08 else k
                if op == 0x10:
                    pc += prog[pc].jt if A == src else prog[pc].jf
                elif op == 0x20:
                    pc += prog[pc].jt if A > src else prog[pc].jf
                elif op == 0x30:
                    pc += prog[pc].jt if A >= src else prog[pc].jf
                elif op == 0x40:
                    pc += prog[pc].jt if A & src else prog[pc].jf
                else:
                    return 0
        else:                                               # MISC: TAX, TXA
            if code & 0xF8 == 0x80:
                A = X
            else:
                X = A
        pc += 1
    return 0


cdef inline uint64_t _align8(uint64_t n) noexcept nogil:
    return (n + 7) & ~(<uint64_t>7)


cdef bint ring_put(unsigned char *ring, uint64_t *head, uint64_t tail, uint32_t mask,
                   uint32_t point, uint32_t port, uint32_t reason, uint32_t detail,
                   const unsigned char *data, uint32_t orig_len, uint32_t cap_len) noexcept nogil:
    """Append a record; False (nothing written) when the ring is full."""
    cdef uint64_t need = _align8(sizeof(cap_rec_t) + cap_len)
    cdef uint64_t pos = head[0] % CAP_RING_BYTES, room = CAP_RING_BYTES - pos
    cdef uint64_t total = need if need <= room else room + need
    if CAP_RING_BYTES - (head[0] - tail) < total:
        return False
    cdef cap_rec_t *rec
    if need > room:                     # does not fit before the end: start over at 0
        if room >= sizeof(cap_rec_t):
            (<cap_rec_t *>(ring + pos)).cap_len = CAP_WRAP
        head[0] += room
        pos = 0
    rec = <cap_rec_t *>(ring + pos)
    rec.ts_ns = realtime_ns()
    rec.mask, rec.port, rec.point, rec.reason, rec.detail = mask, port, point, reason, detail
    rec.orig_len, rec.cap_len = orig_len, cap_len
    memcpy(ring + pos + sizeof(cap_rec_t), data, cap_len)
    head[0] += need
    return True


cdef ssize_t outer_packet(unsigned char *out, const ip_key_t *src, const ip_key_t *dst,
                          const unsigned char *udp, const iovec *parts, int n_parts) noexcept nogil:
    """An encapsulated packet as the wire would carry it, for capture:
    Ethernet (the underlay's MACs are the kernel's business: zeros), IPv4
    or IPv6 (by the addresses' family), then udp (8 bytes, or NULL when
    parts[0] starts with the UDP header) and the parts. Returns its length."""
    cdef ssize_t n, total = 0
    cdef int i
    for i in range(n_parts):
        total += parts[i].iov_len
    if udp != NULL:
        total += UDP_HLEN
    if total + 14 + IP6_HLEN > CAP_SCRATCH:
        return -1
    memset(out, 0, 12)
    if key_is_v4(src):
        out[12], out[13] = 0x08, 0x00
    else:
        out[12], out[13] = 0x86, 0xDD
    n = 14 + outer_ip_header(out + 14, src, dst, total)
    if udp != NULL:
        memcpy(out + n, udp, UDP_HLEN)
        n += UDP_HLEN
    for i in range(n_parts):
        if parts[i].iov_len:                # an empty part may have no buffer (NULL)
            memcpy(out + n, parts[i].iov_base, parts[i].iov_len)
            n += parts[i].iov_len
    return n


cdef int cap_init(capture_t *c) noexcept nogil:
    memset(c.sessions, 0, sizeof(c.sessions))
    c.active = 0
    c.head = c.tail = c.dropped = 0
    c.ring = <unsigned char *>malloc(CAP_RING_BYTES)
    c.scratch = <unsigned char *>malloc(CAP_SCRATCH)
    pthread_mutex_init(&c.lock, NULL)
    return 0 if c.ring != NULL and c.scratch != NULL else -1


cdef void cap_free(capture_t *c) noexcept nogil:
    cdef int i
    free(c.ring)
    free(c.scratch)
    c.ring = c.scratch = NULL
    for i in range(MAX_CAPTURES):
        free(c.sessions[i].prog)
        c.sessions[i].prog = NULL


cdef inline void cap_offer(capture_t *c, uint32_t point, uint32_t port, int reason,
                           const unsigned char *data, ssize_t n) noexcept nogil:
    """Offer a frame to the active sessions (the caller tested c.active)."""
    cap_offer_detail(c, point, port, reason, 0, data, n)


cdef void cap_offer_detail(capture_t *c, uint32_t point, uint32_t port, int reason,
                           uint32_t detail, const unsigned char *data, ssize_t n) noexcept nogil:
    """cap_offer, with a drop's detail (the policy that denied it)."""
    pthread_mutex_lock(&c.lock)
    cap_offer_locked(c, point, port, reason, detail, data, n)
    pthread_mutex_unlock(&c.lock)


cdef void cap_offer_locked(capture_t *c, uint32_t point, uint32_t port, int reason,
                           uint32_t detail, const unsigned char *data, ssize_t n) noexcept nogil:
    cdef uint32_t i, mask = 0, snap = 0, want
    cdef cap_session_t *s
    if n <= 0:
        return
    for i in range(MAX_CAPTURES):
        if not c.active & (1u << i):
            continue
        s = &c.sessions[i]
        if not s.points & point or (s.port >= 0 and s.port != port):
            continue
        want = s.snaplen
        if s.prog_len:
            want = min(want, bpf_run(s.prog, s.prog_len, data, n, n))
            if want == 0:
                continue
        mask |= 1u << i
        snap = max(snap, min(<uint32_t>n, want))
    if mask and not ring_put(c.ring, &c.head, c.tail, mask, point, port,
                             reason + 1 if reason >= 0 else 0, detail, data, n, snap):
        c.dropped += 1


cdef void cap_offer_datagram(capture_t *c, uint32_t point, uint32_t port, int reason,
                             const ip_key_t *src, const ip_key_t *dst,
                             const unsigned char *udp,
                             const iovec *parts, int n_parts) noexcept nogil:
    """Offer a tunnel datagram, as the outer packet the wire carries."""
    pthread_mutex_lock(&c.lock)
    cdef ssize_t n = outer_packet(c.scratch, src, dst, udp, parts, n_parts)
    if n > 0:
        cap_offer_locked(c, point, port, reason, 0, c.scratch, n)
    pthread_mutex_unlock(&c.lock)


cdef int cap_add(capture_t *c, uint32_t points, int64_t port, uint32_t snaplen,
                 program) except -1:
    """Start a session (see Datapath.capture_add); returns its id."""
    cdef int i
    cdef uint32_t j, n = len(program)
    for i in range(MAX_CAPTURES):
        if not c.active & (1u << i):
            break
    else:
        raise OverflowError(f"{MAX_CAPTURES} captures are running already")
    prog = <bpf_insn_t *>calloc(n or 1, sizeof(bpf_insn_t)) if n else NULL
    if n and prog == NULL:
        raise MemoryError()
    for j in range(n):
        code, jt, jf, k = program[j]
        if (code & 0x07) == 0x05 and ((code & 0xF0 == 0 and j + 1 + k > n) or
                                      j + 1 + max(jt, jf) > n):
            free(prog)
            raise ValueError(f"BPF instruction {j} jumps out of the program")
        prog[j].code, prog[j].jt, prog[j].jf, prog[j].k = code, jt, jf, k
    pthread_mutex_lock(&c.lock)
    cdef bpf_insn_t *old = c.sessions[i].prog
    c.sessions[i].points, c.sessions[i].port = points, port
    c.sessions[i].snaplen, c.sessions[i].prog = snaplen, prog
    c.sessions[i].prog_len = n
    c.active |= 1u << i
    pthread_mutex_unlock(&c.lock)
    free(old)
    return i


cdef void cap_remove(capture_t *c, int session) noexcept nogil:
    pthread_mutex_lock(&c.lock)
    if 0 <= session < MAX_CAPTURES:
        c.active &= ~(1u << session)
    if c.active == 0:
        c.tail = c.head         # nobody will read what is left
    pthread_mutex_unlock(&c.lock)


cdef list cap_read(capture_t *c, int max_records):
    """Take records from the ring: [(ts_ns, mask, port, point, reason
    (None or its name), orig_len, bytes, detail)]."""
    out = []
    with nogil:                 # (a worker holding it never waits for the GIL)
        pthread_mutex_lock(&c.lock)
    try:
        _cap_take(c, max_records, out)
    finally:
        pthread_mutex_unlock(&c.lock)
    return out


cdef _cap_take(capture_t *c, int max_records, list out):
    cdef uint64_t pos, room
    cdef cap_rec_t *rec
    while c.tail < c.head and len(out) < max_records:
        pos = c.tail % CAP_RING_BYTES
        room = CAP_RING_BYTES - pos
        rec = <cap_rec_t *>(c.ring + pos)
        if room < sizeof(cap_rec_t) or rec.cap_len == CAP_WRAP:
            c.tail += room
            continue
        data = (c.ring + pos + sizeof(cap_rec_t))[:rec.cap_len]
        out.append((rec.ts_ns, rec.mask, rec.port, rec.point,
                    DROP_NAMES[rec.reason - 1] if rec.reason else None, rec.orig_len, data,
                    rec.detail))
        c.tail += _align8(sizeof(cap_rec_t) + rec.cap_len)

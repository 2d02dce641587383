# Capture: frames matching a session's points, port and classic-BPF filter
# are copied into a ring the control plane drains. Included by
# _fastpath.pyx; C-only helpers. With no session active the data plane
# tests one integer and calls none of this.

from libc.string cimport memcpy

cdef enum:
    CAP_WRAP = 0xFFFFFFFF
    BPF_MEMWORDS = 16


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


cdef inline uint64_t realtime_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec


cdef inline uint64_t _align8(uint64_t n) noexcept nogil:
    return (n + 7) & ~(<uint64_t>7)


cdef bint ring_put(unsigned char *ring, uint64_t *head, uint64_t tail, uint32_t mask,
                   uint32_t point, uint32_t port, uint32_t reason, const unsigned char *data,
                   uint32_t orig_len, uint32_t cap_len) noexcept nogil:
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
    rec.mask, rec.port, rec.point, rec.reason = mask, port, point, reason
    rec.orig_len, rec.cap_len = orig_len, cap_len
    memcpy(ring + pos + sizeof(cap_rec_t), data, cap_len)
    head[0] += need
    return True


cdef inline uint16_t ip4_checksum(const unsigned char *h) noexcept nogil:
    cdef uint32_t s = 0
    cdef int i
    for i in range(0, 20, 2):
        s += (<uint32_t>h[i] << 8) | h[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


cdef ssize_t outer_packet(unsigned char *out, uint32_t src_ip, uint32_t dst_ip,
                          const unsigned char *udp, const iovec *parts, int n_parts) noexcept nogil:
    """An encapsulated packet as the wire would carry it, for capture:
    Ethernet (the underlay's MACs are the kernel's business: zeros), IPv4
    (src_ip, dst_ip in network byte order), then udp (8 bytes, or NULL when
    parts[0] starts with the UDP header) and the parts. Returns its length."""
    cdef ssize_t n = 34, total = 0
    cdef int i
    for i in range(n_parts):
        total += parts[i].iov_len
    if udp != NULL:
        total += UDP_HLEN
    if total + 34 > CAP_SCRATCH:
        return -1
    memset(out, 0, 14)
    out[12], out[13] = 0x08, 0x00
    cdef unsigned char *ip = out + 14
    memset(ip, 0, 20)
    ip[0], ip[8], ip[9] = 0x45, 64, 17
    ip[2], ip[3] = ((total + 20) >> 8) & 0xFF, (total + 20) & 0xFF
    ip[6] = 0x40                            # DF, as Linux's VXLAN sends
    memcpy(ip + 12, &src_ip, 4)
    memcpy(ip + 16, &dst_ip, 4)
    cdef uint16_t csum = ip4_checksum(ip)
    ip[10], ip[11] = csum >> 8, csum & 0xFF
    if udp != NULL:
        memcpy(out + n, udp, UDP_HLEN)
        n += UDP_HLEN
    for i in range(n_parts):
        if parts[i].iov_len:                # an empty part may have no buffer (NULL)
            memcpy(out + n, parts[i].iov_base, parts[i].iov_len)
            n += parts[i].iov_len
    return n

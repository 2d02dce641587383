# The control methods of NetworkPolicy and conntrack: each port's tables, Service
# ranges, the connection table.
# One class of Datapath's chain of bases (_fastpath.pxd); they run on the
# event loop's thread and may use Python objects freely.


cdef enum:
    CT_LIST_SLICE = 4096          # slots copied out under the lock at a time


cdef uint64_t ct_copy_slice(ct_t *ct, uint64_t start, int64_t port, uint32_t now_ms,
                            ct_entry_t *out, uint64_t *n) noexcept nogil:
    """Copy the live entries (of port; -1: all) of CT_LIST_SLICE slots from
    start into out, under the lock (held that long only: a policed frame's
    worker may wait for it); returns where the next slice starts."""
    cdef uint64_t i, end
    cdef ct_entry_t *e
    n[0] = 0
    pthread_mutex_lock(&ct.lock)
    end = min(start + CT_LIST_SLICE, ct.mask + 1)
    for i in range(start, end):
        e = &ct.slots[i]
        if e.key.rest != 0 and ct_live(e, now_ms) and \
                (port < 0 or e.in_port == port or e.out_port == port):
            out[n[0]] = e[0]
            n[0] += 1
    if end == ct.mask + 1:
        end = 0                     # (a table that grew meanwhile: the listing ends)
    pthread_mutex_unlock(&ct.lock)
    return end


cdef class _PolicyControl(_NeighControl):
    def set_port_policy(self, uint32_t port_id, ingress=None, egress=None):
        """Swap in a pod's NetworkPolicy tables, one per direction: None (no
        policy isolates it) or (isolating policy id, [(ranges, l4)]), see
        pol_dir_build. Frames see the old tables or the new, never a mix;
        call policy_changed() once every port has its new tables."""
        cdef port_t *p = self._port(port_id)
        cdef port_policy_t *new = port_policy_build(ingress, egress)
        cdef port_policy_t *old = p.policy
        store_release_ptr(<void **>&p.policy, new)
        self.policed += (new != NULL) - (old != NULL)
        if old != NULL:
            self._retire(RETIRE_POLICY, (<uintptr_t>old,))

    def port_policy_enforced(self, uint32_t port_id):
        return self._port(port_id).policy != NULL

    def policy_changed(self):
        """Policies changed: each tracked connection is checked against the
        new tables on its next packet, and forgotten if no longer allowed."""
        pthread_mutex_lock(&self.ct.lock)
        self.ct.generation += 1
        pthread_mutex_unlock(&self.ct.lock)

    def conntrack_configure(self, uint64_t max_entries, uint64_t max_per_pod=0):
        """A new, empty table for max_entries connections, at most
        max_per_pod (0: max_entries) of them charged to one port."""
        if max_entries < 1:
            raise ValueError("conntrack max_entries must be positive")
        pthread_mutex_lock(&self.ct.lock)
        cdef int r = ct_alloc(&self.ct, max_entries)
        if r == 0:
            self.ct.max_per_owner = max_per_pod or max_entries
        pthread_mutex_unlock(&self.ct.lock)
        if r < 0:
            raise MemoryError()

    def conntrack_usage(self):
        """{port id (PORT_TUNNEL: the tunnel): connections charged to it}."""
        return {(TUNNEL_PORT if i == MAX_PORTS else i): self.ct.owned[i]
                for i in range(CT_OWNERS) if self.ct.owned[i]}

    def set_service_ranges(self, ranges):
        """[(lo, hi)] of Service addresses (integers, IPv4 mapped): a pod's
        packet to one is judged by its egress rules only as the node sends
        it on, DNATed, to a backend."""
        if len(ranges) > MAX_SERVICE_RANGES:
            raise ValueError(f"at most {MAX_SERVICE_RANGES} Service ranges")
        for lo, hi in ranges:
            if not 0 <= lo <= hi < 1 << 128:
                raise ValueError("a Service range is lo..hi")
        seq_write_begin(&self.services.seq)
        for i, (lo, hi) in enumerate(ranges):
            self.services.lo[i], self.services.hi[i] = key_from_int(lo), key_from_int(hi)
        self.services.n = len(ranges)
        seq_write_end(&self.services.seq)

    def conntrack_entries(self, int64_t port=-1, uint64_t limit=0):
        """Live connections (of `port`: that went in or out there; -1: all),
        each (network, protocol, source, sport, destination, dport, flags,
        seconds left, in port, out port, owner: the port it is charged to) in
        the direction it was opened,
        addresses as 128-bit integers (IPv4 mapped), ports CT_NO_PORT beyond
        the tunnel."""
        cdef uint64_t i, n, at = 0
        cdef uint32_t now_ms = ms32(monotonic_ns())
        cdef ct_entry_t *e
        cdef ct_entry_t *buf = <ct_entry_t *>malloc(CT_LIST_SLICE * sizeof(ct_entry_t))
        if buf == NULL:
            raise MemoryError()
        out = []
        try:
            while True:
                with nogil:
                    at = ct_copy_slice(&self.ct, at, port, now_ms, buf, &n)
                for i in range(n):
                    e = &buf[i]
                    a = (key_to_int(&e.key.a), (e.key.rest >> 16) & 0xFFFF)
                    b = (key_to_int(&e.key.b), e.key.rest & 0xFFFF)
                    src, dst = (a, b) if e.flags & CT_ORIG_A else (b, a)
                    out.append(((e.key.rest >> 40) & 0xFFFF, (e.key.rest >> 32) & 0xFF, src[0],
                                src[1], dst[0], dst[1], e.flags,
                                <int32_t>(e.deadline_ms - now_ms) / 1e3,
                                e.in_port, e.out_port, e.owner))
                    if limit and len(out) >= limit:
                        return out
                if at == 0:
                    return out
        finally:
            free(buf)

    def conntrack_flush(self):
        """Forget every connection; returns how many there were."""
        pthread_mutex_lock(&self.ct.lock)
        cdef uint64_t n = self.ct.count
        ct_flush(&self.ct)
        pthread_mutex_unlock(&self.ct.lock)
        return n

    def conntrack_expire(self, uint64_t budget=0):
        """Sweep expired connections from `budget` slots on (0: all)."""
        cdef uint64_t n
        with nogil:
            pthread_mutex_lock(&self.ct.lock)
            n = ct_sweep(&self.ct, ms32(monotonic_ns()), budget)
            pthread_mutex_unlock(&self.ct.lock)
        return n

# The control methods of the FDB: aging, static entries, deletion, lookup, flush,
# expiry and listing.
# One class of Datapath's chain of bases (_fastpath.pxd); they run on the
# event loop's thread and may use Python objects freely.


cdef class _FdbControl(_NetworksControl):
    @property
    def aging_time(self):
        return self.fdb.aging_ms / 1e3

    @aging_time.setter
    def aging_time(self, double seconds):
        if seconds <= 0:
            raise ValueError("aging_time must be positive")
        self.fdb.aging_ms = <uint32_t>(seconds * 1e3)

    def fdb_add_remote(self, int network, uint64_t mac, peer_ip):
        """A static entry: (network, mac) lives behind the peer peer_ip."""
        self._declared(network)
        cdef ip_key_t key = key_from_int(peer_ip)
        cdef int64_t idx = peer_find(&self.peers, &key)
        if idx < 0:
            raise KeyError("no such peer")
        if fdb_pinned_port(&self.fdb, network, mac) >= 0:
            raise ValueError(f"MAC {mac_to_str(mac)} is a port-secured local port's")
        if fdb_set_static(&self.fdb, network, mac, PEER_BASE + idx, FDB_STATIC) < 0:
            raise OverflowError("FDB is full")

    def fdb_delete(self, int network, uint64_t mac):
        """Delete one learned or static entry (not a port's pinned MAC);
        returns whether it existed."""
        self._declared(network)
        return fdb_pinned_port(&self.fdb, network, mac) < 0 and \
            fdb_delete(&self.fdb, network, mac) == 0

    def fdb_lookup(self, int network, uint64_t mac):
        """Where a live entry sends (network, mac): a port id, PORT_PEER_BASE
        + peer index, or -1."""
        self._declared(network)
        return fdb_lookup(&self.fdb, network, mac, monotonic_ns())

    def fdb_flush(self, int network=0):
        """Forget learned MACs of one network (0: all); returns how many."""
        if network:
            self._declared(network)
        return fdb_sweep(&self.fdb, SWEEP_ALL, network, 0, 0)

    def fdb_expire(self, uint64_t budget=0):
        """Delete learned entries older than the aging time; returns how
        many. budget: slots to look at, going on from the last call (0: the
        whole table at once)."""
        cdef uint64_t n = fdb_sweep(&self.fdb, SWEEP_EXPIRED, 0, 0, monotonic_ns(), budget)
        self.fdb.expired += n
        return n

    def fdb_longest_probe(self):
        """The farthest any entry lies from its home slot (hash flooding shows here)."""
        cdef uint64_t i, longest = 0
        for i in range(self.fdb.mask + 1):
            if self.fdb.slots[i].key:
                longest = max(longest, (i - fdb_slot_of(&self.fdb, self.fdb.slots[i].key))
                              & self.fdb.mask)
        return longest

    def fdb_entries(self, int network=0):
        """[(network, mac, port_id or None, peer ip or None, age, static,
        pinned)] of live entries; peer ips in network byte order."""
        cdef uint64_t i, now = monotonic_ns()
        cdef fdb_entry_t *e
        out = []
        for i in range(self.fdb.mask + 1):
            e = &self.fdb.slots[i]
            if e.key == 0 or fdb_expired(&self.fdb, e, now):
                continue
            if network and (e.key >> 48) != <uint64_t>network:
                continue
            remote = e.port >= PEER_BASE
            out.append((e.key >> 48, mac_to_str(e.key & 0xFFFFFFFFFFFF),
                        None if remote else e.port,
                        key_to_int(&self.peers.slots[e.port - PEER_BASE].ip) if remote else None,
                        0.0 if e.kind != FDB_LEARNED else <uint32_t>(ms32(now) - e.seen_ms) / 1e3,
                        e.kind != FDB_LEARNED, e.kind == FDB_PINNED))
        return out

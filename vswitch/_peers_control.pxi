# The control methods of VXLAN peers: added, removed, expired and listed.
# One class of Datapath's chain of bases (_fastpath.pxd); they run on the
# event loop's thread and may use Python objects freely.


cdef class _PeersControl(_PortsControl):
    def add_peer(self, ip, int network):
        """Flood `network` to the VTEP ip (an int: IPv6, or IPv4 mapped to
        ::ffff:0:0/96; not 0); returns its index."""
        self._declared(network)
        if not ip:
            raise ValueError("peer address 0")
        pthread_mutex_lock(&self.peers.lock)
        cdef int64_t idx = peer_join(&self.peers, key_from_int(ip), network, False)
        pthread_mutex_unlock(&self.peers.lock)
        if idx < 0:
            raise OverflowError("peer table is full")
        return idx

    def remove_peer(self, ip, int network=0):
        """Stop flooding `network` (0: all) to ip; a peer left in no network
        is forgotten with its FDB entries. Returns whether it was known."""
        cdef ip_key_t key = key_from_int(ip)
        cdef int64_t idx = peer_find(&self.peers, &key)
        if idx < 0:
            return False
        pthread_mutex_lock(&self.peers.lock)
        cdef bint forget = peer_leave(&self.peers, idx, network) == 0
        pthread_mutex_unlock(&self.peers.lock)
        if forget:
            fdb_sweep(&self.fdb, SWEEP_PORT, 0, PEER_BASE + idx, 0)
            pthread_mutex_lock(&self.peers.lock)
            peer_forget(&self.peers, idx)
            pthread_mutex_unlock(&self.peers.lock)
            self._retire(RETIRE_PEER, (idx,))
        return True

    def peer_ip(self, uint32_t index):
        """The address of peer `index` (as add_peer takes it), 0 if none."""
        return key_to_int(&self.peers.slots[index].ip) if index < MAX_PEERS else 0

    def expire_peers(self, double max_idle):
        """Forget learned peers not heard from for max_idle seconds; returns
        their addresses."""
        cdef uint64_t now = monotonic_ns(), idle = <uint64_t>(max_idle * 1e9)
        cdef peer_t *p
        gone = []
        for i in range(self.peers.limit):
            p = &self.peers.slots[i]
            if not key_is_zero(&p.ip) and p.learned and now - load_u64(&p.last_rx_ns) > idle:
                gone.append(key_to_int(&p.ip))
        for ip in gone:
            self.remove_peer(ip)
        return gone

    def peer_count(self):
        cdef uint32_t i, n = 0
        for i in range(self.peers.limit):
            n += not key_is_zero(&self.peers.slots[i].ip)
        return n

    def peer_list(self, only=0):
        """[(ip, [network ids], counters, learned)] of known peers (only: of
        the peer with that address)."""
        out = []
        cdef uint32_t i, m
        cdef peer_t *p
        cdef ip_key_t key
        cdef int64_t found
        if only:
            key = key_from_int(only)
            found = peer_find(&self.peers, &key)
            indexes = [] if found < 0 else [found]
        else:
            indexes = range(self.peers.limit)
        networks: dict = {}             # one pass over the memberships, for every peer
        for m in range(self.peers.n_members):
            networks.setdefault(self.peers.member_peer[m], []).append(self.peers.member_net[m])
        for i in indexes:
            p = &self.peers.slots[i]
            if key_is_zero(&p.ip):
                continue
            out.append((key_to_int(&p.ip), sorted(networks.get(i, ())), self._peer_counters(i),
                        bool(p.learned)))
        return out

# The control methods of the neighbour table: addresses answered here (ARP and ND
# suppression).
# One class of Datapath's chain of bases (_fastpath.pxd); they run on the
# event loop's thread and may use Python objects freely.


cdef class _NeighControl(_FdbControl):
    def neigh_set(self, int network, ip, uint64_t mac):
        """(network, ip) has mac: ARP requests (IPv4) and Neighbor
        Solicitations (IPv6) for ip from local ports are answered with it
        (ip as an int, IPv4 mapped: as add_peer takes it)."""
        self._declared(network)
        if not ip or mac == 0:
            raise ValueError("address and MAC must not be 0")
        cdef ip_key_t key = key_from_int(ip)
        self._neigh_set(&self.neigh, network, &key, mac)

    def neigh_delete(self, int network, ip):
        """Forget (network, ip); returns whether it was known."""
        cdef ip_key_t key = key_from_int(ip)
        return neigh_delete(&self.neigh, network, &key)

    def neigh_lookup(self, int network, ip):
        """The MAC of (network, ip), or 0."""
        cdef ip_key_t key = key_from_int(ip)
        return neigh_lookup(&self.neigh, network, &key)

    @property
    def neigh_count(self):
        return self.neigh.count

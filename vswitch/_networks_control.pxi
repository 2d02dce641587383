# The control methods of networks: declared with their VNI and pod MTU, and forgotten
# (with their peers' memberships, FDB entries and neighbours).
# One class of Datapath's chain of bases (_fastpath.pxd); they run on the
# event loop's thread and may use Python objects freely.


cdef class _NetworksControl(_PeersControl):
    def set_network(self, int network, uint32_t vni, int mtu):
        """Declare network id 1..4095 with its VNI and pod MTU."""
        if not 0 < network < MAX_NETWORKS:
            raise ValueError(f"network id must be 1..{MAX_NETWORKS - 1}")
        if not 0 < vni <= 0xFFFFFF or not 68 <= mtu <= 65535:
            raise ValueError("vni must be 1..16777215 and mtu 68..65535")
        self.networks.vni_of[network] = vni
        self.networks.mtu_of[network] = mtu

    def remove_network(self, int network):
        """Forget a network whose ports are gone: its peers' memberships,
        its FDB entries (static ones included) and its neighbours."""
        self._declared(network)
        # Peers left in no network are forgotten with their FDB entries: in
        # one sweep of the table for all of them (a cluster has thousands).
        cdef uint8_t *gone = <uint8_t *>calloc(MAX_PEERS, 1)
        cdef uint32_t i
        if gone == NULL:
            raise MemoryError()
        pthread_mutex_lock(&self.peers.lock)
        for i in range(self.peers.limit):
            if not key_is_zero(&self.peers.slots[i].ip) and peer_is_member(&self.peers, i, network):
                gone[i] = peer_leave(&self.peers, i, network) == 0
        pthread_mutex_unlock(&self.peers.lock)
        fdb_sweep(&self.fdb, SWEEP_NETWORK, network, 0, 0)
        fdb_sweep(&self.fdb, SWEEP_PEERS, 0, 0, 0, 0, gone)
        pthread_mutex_lock(&self.peers.lock)
        for i in range(self.peers.limit):
            if gone[i]:
                peer_forget(&self.peers, i, False)
        peer_index_rebuild(&self.peers)
        pthread_mutex_unlock(&self.peers.lock)
        self._retire(RETIRE_PEER, [i for i in range(MAX_PEERS) if gone[i]])
        free(gone)
        cdef ip_key_t neighbour
        for key in [key_to_int(&self.neigh.slots[i].ip) for i in range(self.neigh.mask + 1)
                    if self.neigh.slots[i].network == <uint64_t>network]:
            neighbour = key_from_int(key)
            neigh_delete(&self.neigh, network, &neighbour)
        self.networks.vni_of[network] = 0
        self.networks.mtu_of[network] = 0

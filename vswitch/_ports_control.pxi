# The control methods of ports: attached and detached, port security, host addresses,
# pinned MACs, rate limits.
# One class of Datapath's chain of bases (_fastpath.pxd); they run on the
# event loop's thread and may use Python objects freely.


cdef class _PortsControl(_Shared):
    def add_port(self, int fd, int network, bint vnet_hdr=False, bint router=False):
        """Attach a non-blocking fd to a declared network; returns the port id.
        vnet_hdr: frames on the fd are preceded by a virtio_net_hdr; router:
        the port may send IPv6 Router Advertisements and Redirects (the
        host port; every other port is RA-guarded)."""
        self._declared(network)
        cdef int64_t port_id = ports_add(&self.ports, fd, network, vnet_hdr, router)
        if port_id < 0:
            raise OverflowError(f"all {MAX_PORTS} ports are in use")
        if poller_watch(&self.w.poller, fd, port_id) < 0:
            ports_remove(&self.ports, port_id)
            raise OSError(errno, f"cannot poll fd {fd}")
        return port_id

    def remove_port(self, uint32_t port_id):
        """Detach a port (the caller closes its fd) and forget its FDB entries."""
        cdef port_t *p = self._port(port_id)
        fdb_sweep(&self.fdb, SWEEP_PORT, 0, port_id, 0)
        self._own_addresses(port_id, False)
        ct_forget_owner(&self.ct, port_id)
        if p.policy != NULL:
            self.policed -= 1
        port_policy_free(p.policy)
        p.policy = NULL
        poller_unwatch(&self.w.poller, p.fd)
        ports_remove(&self.ports, port_id)

    def set_port_security(self, uint32_t port_id, mac=None, ips=(), ip6s=()):
        """Bind a port to its MAC, IPv4 and IPv6 addresses (integers); frames
        from other sources are dropped as spoofed_source, neighbour
        discovery for other addresses or MACs as nd_spoofed. The MAC is pinned to
        the port in the FDB: frames from anywhere else with it as source
        (another port, a peer) are dropped as mac_pinned. mac=None turns it
        off."""
        cdef port_t *p = self._port(port_id)
        if p.router:
            raise ValueError("a host port is not port-secured (set_host_addresses)")
        if p.secured:
            fdb_delete(&self.fdb, p.network, p.sec_mac)
            self._own_addresses(port_id, False)
            p.secured = False
        if mac is None:
            return
        if len(ips) > MAX_PORT_IPS or len(ip6s) > MAX_PORT_IP6S:
            raise ValueError(f"at most {MAX_PORT_IPS} IPv4 and {MAX_PORT_IP6S} IPv6 addresses "
                             "per port")
        self.pin_mac(port_id, mac)
        p.sec_mac = mac
        p.n_sec_ips = len(ips)
        for i, ip in enumerate(ips):
            p.sec_ips[i] = ip
        p.n_sec_ip6s = len(ip6s)
        for i, ip in enumerate(ip6s):
            p.sec_ip6s[i] = key_from_int(ip)
        p.secured = True
        self._own_addresses(port_id, True)

    def set_host_addresses(self, uint32_t port_id, ips=(), ip6s=()):
        """The node's own addresses on host port port_id (integers): what
        it sends from them is the node's (kubelet's probes), let in whatever
        pods' ingress rules say; what it routes from any other address is
        judged as that address's (a local pod's egress rules included)."""
        cdef port_t *p = self._port(port_id)
        if not p.router:
            raise ValueError(f"port {port_id} is not a host port")
        if len(ips) > MAX_PORT_IPS or len(ip6s) > MAX_PORT_IP6S:
            raise ValueError(f"at most {MAX_PORT_IPS} IPv4 and {MAX_PORT_IP6S} IPv6 addresses")
        p.n_sec_ips, p.n_sec_ip6s = len(ips), len(ip6s)
        for i, ip in enumerate(ips):
            p.sec_ips[i] = ip
        for i, ip in enumerate(ip6s):
            p.sec_ip6s[i] = key_from_int(ip)

    cdef _own_addresses(self, uint32_t port_id, bint own):
        """Record (or forget) a secured port's addresses as its own, for
        telling which pod a packet the node routes comes from."""
        cdef port_t *p = &self.ports.slots[port_id]
        cdef ip_key_t key
        for i in range(p.n_sec_ips + p.n_sec_ip6s):
            key = key_of_ip4(p.sec_ips[i]) if i < p.n_sec_ips else p.sec_ip6s[i - p.n_sec_ips]
            if own:
                if neigh_set(&self.owners, p.network, &key, port_id + 1) < 0:
                    raise MemoryError()
            elif neigh_lookup(&self.owners, p.network, &key) == port_id + 1:
                neigh_delete(&self.owners, p.network, &key)

    def pin_mac(self, uint32_t port_id, uint64_t mac):
        """Pin a MAC to a port (a secured pod's, the host port's): it lives
        there for good, and frames from anywhere else with it as source are
        dropped as mac_pinned. Removing the port unpins it."""
        cdef port_t *p = self._port(port_id)
        cdef int64_t pinned = fdb_pinned_port(&self.fdb, p.network, mac)
        if pinned >= 0 and pinned != port_id:
            raise ValueError(f"MAC {mac_to_str(mac)} is bound to port {pinned} already")
        if fdb_set_static(&self.fdb, p.network, mac, port_id, FDB_PINNED) < 0:
            raise OverflowError("FDB is full")
        p.mac = mac

    def set_port_rates(self, uint32_t port_id, double ingress_bps=0, double ingress_burst=0,
                       double egress_bps=0, double egress_burst=0):
        """Token-bucket limits in bits/s and bits (rate 0: none). Ingress:
        frames the port sends into the switch; egress: frames written to it."""
        cdef port_t *p = self._port(port_id)
        bucket_set(&p.ingress, ingress_bps, ingress_burst, monotonic_ns())
        bucket_set(&p.egress, egress_bps, egress_burst, monotonic_ns())

    def port_counters(self, uint32_t port_id):
        return port_counters(self._port(port_id))

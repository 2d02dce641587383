# The control methods of ports: attached and detached, port security, host addresses,
# pinned MACs, rate limits.
# One class of Datapath's chain of bases (_fastpath.pxd); they run on the
# event loop's thread and may use Python objects freely.


cdef class _PortsControl(_Shared):
    def add_port(self, fds, int network, bint vnet_hdr=False, bint router=False):
        """Attach non-blocking fds (an int, or a TAP's queues: a list) to a
        declared network; returns the port id. Worker k reads queue k (if
        there is one) and writes to queue k modulo their number. The data
        plane keeps duplicates of them: the caller may close its own at any
        time after remove_port. vnet_hdr: frames on the fds are preceded by a
        virtio_net_hdr; router: the port may send IPv6 Router Advertisements
        and Redirects (the host port; every other port is RA-guarded)."""
        self._declared(network)
        fds = [fds] if isinstance(fds, int) else list(fds)
        if not 0 < len(fds) <= MAX_WORKERS:
            raise ValueError(f"a port has 1..{MAX_WORKERS} queues")
        cdef int own[MAX_WORKERS]
        cdef int k, n = len(fds)
        dups = [os.dup(fd) for fd in fds]       # ours: closed after a grace period
        for k in range(n):
            own[k] = dups[k]
        cdef int64_t port_id = ports_add(&self.ports, own, n, network, vnet_hdr, router)
        if port_id < 0:
            for fd in dups:
                os.close(fd)
            raise OverflowError(f"all {MAX_PORTS} ports are in use")
        for k in range(min(n, self.n_workers)):
            if poller_watch(&self.workers[k].poller, own[k], port_id) < 0:
                err = errno
                self.remove_port(port_id)
                raise OSError(err, f"cannot poll fd {fds[k]}")
        return port_id

    def remove_port(self, uint32_t port_id):
        """Detach a port and forget its FDB entries and connections."""
        cdef port_t *p = self._port(port_id)
        cdef int k
        for k in range(min(p.n_queues, self.n_workers)):
            poller_unwatch(&self.workers[k].poller, p.fds[k])
        ports_remove(&self.ports, port_id)
        fdb_sweep(&self.fdb, SWEEP_PORT, 0, port_id, 0)
        self._own_addresses(port_id, False)
        pthread_mutex_lock(&self.ct.lock)
        ct_forget_owner(&self.ct, port_id)
        pthread_mutex_unlock(&self.ct.lock)
        if p.policy != NULL:
            self.policed -= 1
        self._retire(RETIRE_PORT, (port_id,))

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
            seq_write_begin(&self.ports.seq)
            p.secured = False
            seq_write_end(&self.ports.seq)
        if mac is None:
            return
        if len(ips) > MAX_PORT_IPS or len(ip6s) > MAX_PORT_IP6S:
            raise ValueError(f"at most {MAX_PORT_IPS} IPv4 and {MAX_PORT_IP6S} IPv6 addresses "
                             "per port")
        self.pin_mac(port_id, mac)
        seq_write_begin(&self.ports.seq)
        p.sec_mac = mac
        p.n_sec_ips = len(ips)
        for i, ip in enumerate(ips):
            p.sec_ips[i] = ip
        p.n_sec_ip6s = len(ip6s)
        for i, ip in enumerate(ip6s):
            p.sec_ip6s[i] = key_from_int(ip)
        p.secured = True
        seq_write_end(&self.ports.seq)
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
        seq_write_begin(&self.ports.seq)
        p.n_sec_ips, p.n_sec_ip6s = len(ips), len(ip6s)
        for i, ip in enumerate(ips):
            p.sec_ips[i] = ip
        for i, ip in enumerate(ip6s):
            p.sec_ip6s[i] = key_from_int(ip)
        seq_write_end(&self.ports.seq)

    cdef _own_addresses(self, uint32_t port_id, bint own):
        """Record (or forget) a secured port's addresses as its own, for
        telling which pod a packet the node routes comes from."""
        cdef port_t *p = &self.ports.slots[port_id]
        cdef ip_key_t key
        for i in range(p.n_sec_ips + p.n_sec_ip6s):
            key = key_of_ip4(p.sec_ips[i]) if i < p.n_sec_ips else p.sec_ip6s[i - p.n_sec_ips]
            if own:
                self._neigh_set(&self.owners, p.network, &key, port_id + 1)
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
        """The port's counters, summed over the workers."""
        self._port(port_id)
        return self._port_counters(port_id)

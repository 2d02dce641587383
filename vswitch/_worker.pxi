# A forwarding thread's own state (worker_t, _worker.pxd): set up and torn down.

cdef int worker_init(worker_t *w, int index, int batch, double busy_poll_us) noexcept nogil:
    """-1 with nothing to free twice if something could not be had."""
    memset(w, 0, sizeof(worker_t))
    w.index = index
    w.batch = batch
    w.tunnel.fd = -1
    w.stop_fd = -1
    gro_init(&w.gro)
    w.slots = <unsigned char *>malloc(<size_t>batch * SLOT_SIZE)
    w.stats = <port_stats_t *>calloc(MAX_PORTS + 1, sizeof(port_stats_t))
    w.peer_stats = <peer_stats_t *>calloc(MAX_PEERS, sizeof(peer_stats_t))
    if poller_init(&w.poller, busy_poll_us) < 0 or w.slots == NULL or w.stats == NULL \
            or w.peer_stats == NULL \
            or tunnel_tx_init(&w.tx) < 0 or tunnel_rx_init(&w.rx, w.slots, batch) < 0:
        return -1
    w.stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    if w.stop_fd < 0 or poller_watch(&w.poller, w.stop_fd, STOP_KEY) < 0:
        return -1
    return 0


cdef void worker_free(worker_t *w) noexcept nogil:
    if w.batch == 0:            # never set up (a zeroed epfd is not ours to close)
        return
    poller_free(&w.poller)
    tunnel_tx_free(&w.tx)
    tunnel_rx_free(&w.rx)
    if w.stop_fd >= 0:
        close(w.stop_fd)
    free(w.slots)
    free(w.stats)
    free(w.peer_stats)
    w.slots = NULL
    w.stats = NULL
    w.peer_stats = NULL


cdef inline port_stats_t *stats_of(worker_t *w, uint32_t port_id) noexcept nogil:
    """A port's (or, for PEER_BASE + peer, the tunnel's) counters: this worker's share."""
    return &w.stats[port_id if port_id < PEER_BASE else TUNNEL_STATS]

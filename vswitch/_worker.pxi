# A forwarding thread's own state (worker_t, _worker.pxd): set up and torn down.

cdef int worker_init(worker_t *w, int batch, double busy_poll_us) noexcept nogil:
    """-1 with nothing to free twice if something could not be had."""
    memset(w, 0, sizeof(worker_t))
    w.batch = batch
    w.tunnel.fd = -1
    gro_init(&w.gro)
    w.slots = <unsigned char *>malloc(<size_t>batch * SLOT_SIZE)
    if poller_init(&w.poller, busy_poll_us) < 0 or w.slots == NULL \
            or tunnel_tx_init(&w.tx) < 0 or tunnel_rx_init(&w.rx, w.slots, batch) < 0:
        return -1
    return 0


cdef void worker_free(worker_t *w) noexcept nogil:
    if w.batch == 0:            # never set up (a zeroed epfd is not ours to close)
        return
    poller_free(&w.poller)
    tunnel_tx_free(&w.tx)
    tunnel_rx_free(&w.rx)
    free(w.slots)
    w.slots = NULL

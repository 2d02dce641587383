# Ports and the poller (see _ports.pxd): the fd table, and the epoll set
# that tells which fds are ready. The pipeline reads and writes the fds.


cdef int ports_init(ports_t *p) noexcept nogil:
    p.slots = <port_t *>calloc(MAX_PORTS, sizeof(port_t))
    if p.slots == NULL:
        return -1
    cdef uint32_t i
    for i in range(MAX_PORTS):
        p.slots[i].fd = -1
    p.limit = 0
    return 0


cdef void ports_free(ports_t *p) noexcept nogil:
    free(p.slots)
    p.slots = NULL


cdef inline port_t *port_at(ports_t *p, uint32_t port_id) noexcept nogil:
    """The port with this id, or NULL if there is none."""
    if port_id >= p.limit or p.slots[port_id].fd < 0:
        return NULL
    return &p.slots[port_id]


cdef int64_t ports_add(ports_t *p, const int *fds, int n_queues, uint16_t network, bint vnet_hdr,
                       bint router) noexcept nogil:
    """Take the first free slot: the new port's id, or -1 when all are in
    use. fds: its queues; worker k writes to queue k modulo their number.
    The slot is filled before its fd is published."""
    cdef uint32_t i, k
    cdef port_t *s
    for i in range(MAX_PORTS):
        s = &p.slots[i]
        if s.fd < 0 and not s.retiring:
            memset(s, 0, sizeof(port_t))
            s.fd = -1
            for k in range(MAX_WORKERS):
                s.fds[k] = fds[k % n_queues]
            s.n_queues = n_queues
            s.network = network
            s.vnet_hdr = vnet_hdr
            s.router = router
            store_release_int(&s.fd, fds[0])
            if i >= p.limit:
                store_u32(&p.limit, i + 1)
            return i
    return -1


cdef void ports_remove(ports_t *p, uint32_t port_id) noexcept nogil:
    """Unpublish a port; its slot (and fds) stay as they are for workers
    still serving one of its frames, until Datapath.reclaim."""
    p.slots[port_id].retiring = True
    store_release_int(&p.slots[port_id].fd, -1)
    while p.limit > 0 and p.slots[p.limit - 1].fd < 0:
        store_u32(&p.limit, p.limit - 1)


cdef int poller_init(poller_t *p, double busy_poll_us) noexcept nogil:
    p.epfd = epoll_create1(EPOLL_CLOEXEC)
    p.failed = <uint32_t *>calloc(MAX_PORTS + 1, sizeof(uint32_t))
    p.n_failed = 0
    pthread_mutex_init(&p.failed_lock, NULL)
    p.busy_poll_ns = <uint64_t>(busy_poll_us * 1000)
    return -1 if p.epfd < 0 or p.failed == NULL else 0


cdef void poller_free(poller_t *p) noexcept nogil:
    if p.epfd >= 0:
        close(p.epfd)
    p.epfd = -1
    free(p.failed)
    p.failed = NULL


cdef int poller_watch(poller_t *p, int fd, uint32_t key) noexcept nogil:
    """Poll fd under key (a port id, or TUNNEL_PORT); -1 with errno set if not."""
    cdef epoll_event ev
    ev.events = EPOLLIN
    ev.data.u32 = key
    return epoll_ctl(p.epfd, EPOLL_CTL_ADD, fd, &ev)


cdef void poller_unwatch(poller_t *p, int fd) noexcept nogil:
    cdef epoll_event ev
    epoll_ctl(p.epfd, EPOLL_CTL_DEL, fd, &ev)     # fails only if already gone


cdef void poller_fail(poller_t *p, uint32_t key, int fd) noexcept nogil:
    """Stop polling a failed fd and note its key for the control plane."""
    poller_unwatch(p, fd)
    pthread_mutex_lock(&p.failed_lock)
    if p.n_failed <= MAX_PORTS:
        p.failed[p.n_failed] = key
        p.n_failed += 1
    pthread_mutex_unlock(&p.failed_lock)

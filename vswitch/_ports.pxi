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


cdef int64_t ports_add(ports_t *p, int fd, uint16_t network, bint vnet_hdr,
                       bint router) noexcept nogil:
    """Take the first free slot: the new port's id, or -1 when all are in use."""
    cdef uint32_t i
    for i in range(MAX_PORTS):
        if p.slots[i].fd < 0:
            memset(&p.slots[i], 0, sizeof(port_t))
            p.slots[i].fd = fd
            p.slots[i].network = network
            p.slots[i].vnet_hdr = vnet_hdr
            p.slots[i].router = router
            if i >= p.limit:
                p.limit = i + 1
            return i
    return -1


cdef void ports_remove(ports_t *p, uint32_t port_id) noexcept nogil:
    p.slots[port_id].fd = -1
    while p.limit > 0 and p.slots[p.limit - 1].fd < 0:
        p.limit -= 1


cdef int poller_init(poller_t *p, double busy_poll_us) noexcept nogil:
    p.epfd = epoll_create1(EPOLL_CLOEXEC)
    p.failed = <uint32_t *>calloc(MAX_PORTS + 1, sizeof(uint32_t))
    p.n_failed = 0
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
    if p.n_failed <= MAX_PORTS:
        p.failed[p.n_failed] = key
        p.n_failed += 1

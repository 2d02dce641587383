# Ports (file descriptors carrying Ethernet frames, a virtio_net_hdr before
# each on offload ports) and the poller that serves the ready ones.

from libc.stdint cimport uint16_t, uint32_t, uint64_t, int32_t

cdef enum:
    MAX_PORTS = 4096          # port ids are indexes into a fixed array
    MAX_WORKERS = 64          # forwarding threads (_worker.pxd), and queues of a port
    MAX_PORT_IPS = 8          # IPv4 addresses port security binds to one port
    MAX_PORT_IP6S = 4         # IPv6 addresses (its link-local one included)
    POLL_EVENTS = 256         # ready fds taken from epoll at once
    POLL_BUDGET_NS = 2000000  # then back to the event loop (control plane)
    POLL_QUANTUM_NS = 50000   # a port's time per round, at most (and `batch` frames)
    TUNNEL_PORT = 0xFFFFFFFF  # the poller's key of the tunnel, and its records' port
    STOP_KEY = 0xFFFFFFFE     # the poller's key of a worker's stop eventfd
    TUNNEL_STATS = MAX_PORTS  # the tunnel's row of a worker's port_stats_t


cdef struct bucket_t:         # a token bucket; rate 0 = no limit. Shared by all workers:
    spin_t lock               # taken around a refill and take (only when rate > 0)
    double rate               # bytes per nanosecond
    double burst              # bytes
    double tokens             # bytes
    uint64_t last_ns


cdef struct port_t:
    # Written by the control plane only (_ports_control.pxi); forwarding
    # threads read. A slot is filled before its fd is published (fd >= 0,
    # a release store), and a removed one is not reused until every worker
    # has passed a quiescent point (`retiring`, Datapath.reclaim).
    int fd                    # queue 0's fd; -1 when the slot is free
    int fds[MAX_WORKERS]       # the fd worker k reads (k < n_queues) and writes (any k)
    uint16_t n_queues         # the TAP's queues (IFF_MULTI_QUEUE) we hold
    bint retiring             # removed, not yet reclaimed: not to be reused
    uint16_t network          # network id, 0 = not switching
    bint vnet_hdr             # frames on this fd carry a virtio_net_hdr
    bint secured              # port security: sources must be the port's own
    bint router               # may send IPv6 RAs and Redirects (the host port); others: RA guard
    uint64_t sec_mac          # the port's MAC, when secured
    uint64_t mac              # its own MAC once pinned (pods with port security, host ports)
    uint32_t sec_ips[MAX_PORT_IPS]    # its IPv4 addresses (first octet most significant)
    uint32_t n_sec_ips
    ip_key_t sec_ip6s[MAX_PORT_IP6S]      # its IPv6 addresses (_underlay.pxd)
    uint32_t n_sec_ip6s
    port_policy_t *policy     # NetworkPolicy tables; NULL: no policy selects it. Swapped
                              # whole (release store); the old one is freed after a grace period
    bucket_t ingress          # frames from the port (the pod's sending)
    bucket_t egress           # frames to the port (the pod's receiving)


cdef struct port_stats_t:     # a port's counters: one per worker (worker_t.stats), summed on read
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t rx_dropped       # frames from this port dropped at ingress
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t tx_dropped       # copies towards this port that were not written
    uint64_t policy_denied    # frames its own policies denied (either direction)
    uint64_t pad


cdef struct ports_t:
    port_t *slots             # MAX_PORTS of them
    uint32_t limit            # highest port id in use + 1
    seqcount_t seq            # around changes of a live port's addresses (port security)


cdef struct poller_t:
    int epfd                  # every port's fd and the tunnel's
    epoll_event events[POLL_EVENTS]
    uint64_t busy_poll_ns     # keep polling this long after the last frame
    uint32_t *failed          # keys whose fd failed, for the control plane ...
    uint32_t n_failed
    pthread_mutex_t failed_lock   # ... which takes them under this

# Shared C structures of the data plane. Everything here is plain C: the
# per-frame path touches only these structs and never a Python object.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t


cdef enum:
    MAX_PORTS = 4096          # port ids are indexes into a fixed array
    MAX_NETWORKS = 4096       # network ids 1..MAX_NETWORKS-1 (0 = none)
    FRAME_HEADROOM = 64       # room to prepend headers without copying
    FRAME_BUF = 65536 + 128   # one TSO superframe plus its headers
    ETH_HLEN = 14
    VLAN_HLEN = 4
    VNET_HLEN = 10            # struct virtio_net_hdr, before each frame on IFF_VNET_HDR fds
    MAX_PEERS = 1024          # remote VTEPs; FDB entries name them as PEER_BASE + index
    PEER_BASE = MAX_PORTS
    MAX_MEMBERS = 8192        # (network, peer) pairs: which peers a network floods to
    MAX_PENDING = 1024        # VXLAN datagrams queued for one sendmmsg
    MAX_SENDERS = 64          # the tunnel's sending sockets (outer source ports)
    SEG_HDR_MAX = 256         # room for one segment's copy of a superframe's headers
    GRO_MAX_IOV = 48          # segments merged into one superframe, at most
    VXLAN_HLEN = 8
    UDP_HLEN = 8
    OUTER_OVERHEAD = 20 + UDP_HLEN + VXLAN_HLEN   # outer IPv4 + UDP + VXLAN
    MAX_PORT_IPS = 8          # IPv4 addresses port security binds to one port
    FDB_MAX_PROBE = 128       # slots a lookup or insert walks from an entry's home, at most
    MEMBER_BYTES = MAX_NETWORKS // 8     # one peer's row of the (peer, network) bitmap


# struct virtio_net_hdr fields (little-endian u16s after the two bytes).
cdef enum:
    VNET_F_NEEDS_CSUM = 1
    VNET_F_DATA_VALID = 2
    VNET_GSO_NONE = 0
    VNET_GSO_TCPV4 = 1
    VNET_GSO_UDP = 3
    VNET_GSO_TCPV6 = 4
    VNET_GSO_UDP_L4 = 5
    VNET_GSO_ECN = 0x80


# Drop reasons (per-frame counters). Keep DROP_NAMES in _fastpath.pyx in the same order.
cdef enum:  # drop reasons
    DROP_RUNT = 0             # shorter than an Ethernet header
    DROP_OVERSIZE             # payload longer than the network's MTU
    DROP_BAD_SOURCE           # multicast/broadcast source MAC
    DROP_SPOOFED_SOURCE       # source MAC, IPv4 or ARP sender not the port's own
    DROP_RA_GUARD             # IPv6 Router Advertisement or Redirect from a pod or peer
    DROP_MAC_PINNED           # source MAC is bound to another (port-secured) port
    DROP_RATE_LIMITED         # over the port's ingress or egress rate (token bucket)
    DROP_LOOP                 # destination learned on the ingress port
    DROP_NO_ROUTE             # nowhere to send it (no other port in the network)
    DROP_BAD_VNET_HDR         # offload header that does not fit the frame, or a partial
                              # checksum aimed anywhere but a TCP/UDP checksum field
    DROP_BAD_VXLAN            # short datagram, wrong flags or reserved bits set
    DROP_UNKNOWN_VNI          # VXLAN for a VNI this node has no network for
    DROP_UNKNOWN_PEER         # VXLAN from a source that is not a peer
    DROP_PEER_NOT_MEMBER      # VXLAN from a peer for a network it is not a member of
    DROP_NEEDS_SEGMENTATION   # superframe towards a port without offloads (per copy)
    DROP_TOO_BIG              # would exceed the underlay MTU once encapsulated (per copy)
    DROP_PORT_DOWN            # egress interface is down (per copy)
    DROP_QUEUE_FULL           # egress fd would block (per copy)
    DROP_WRITE_ERROR          # egress write failed otherwise (per copy)
    N_DROP_REASONS


# Capture points (bits of a session's point mask).
cdef enum:
    CAP_INGRESS = 1           # a frame read from a pod port
    CAP_EGRESS = 2            # a frame written to a pod port
    CAP_ENCAP = 4             # an outer VXLAN packet sent to a peer
    CAP_DECAP = 8             # an inner frame received from a peer
    CAP_DROP = 16             # a frame dropped, with its reason
    MAX_CAPTURES = 32         # sessions at once (bits of a record's mask)
    CAP_RING_BYTES = 8 << 20  # records waiting for the control plane
    CAP_SCRATCH = 65536 + 512 # one synthesized outer packet
    TUNNEL_PORT = 0xFFFFFFFF  # the port of tunnel-level records


cdef struct bpf_insn_t:      # struct sock_filter: classic BPF, as libpcap compiles it
    uint16_t code
    uint8_t jt
    uint8_t jf
    uint32_t k


cdef struct cap_session_t:
    uint32_t points           # CAP_* bits
    int64_t port              # a port id (or PEER_BASE + peer), -1 = any
    uint32_t snaplen
    bpf_insn_t *prog          # NULL: every frame matches
    uint32_t prog_len


cdef struct cap_rec_t:       # a record in the capture ring, followed by its bytes
    uint64_t ts_ns            # CLOCK_REALTIME
    uint32_t mask             # the sessions it matched
    uint32_t port
    uint32_t orig_len
    uint32_t cap_len          # CAP_WRAP: the rest of the ring is empty, go to its start
    uint16_t point
    uint16_t reason           # drop reason + 1; 0 = not a drop
    uint32_t pad


cdef struct bucket_t:          # a token bucket; rate 0 = no limit
    double rate               # bytes per nanosecond
    double burst              # bytes
    double tokens             # bytes
    uint64_t last_ns


cdef struct port_t:
    int32_t fd                # -1 when the slot is free
    uint16_t network          # network id, 0 = not switching
    bint vnet_hdr             # frames on this fd carry a virtio_net_hdr
    bint secured              # port security: sources must be the port's own
    bint router               # may send IPv6 RAs and Redirects (the host port); others: RA guard
    uint64_t sec_mac          # the port's MAC, when secured
    uint32_t sec_ips[MAX_PORT_IPS]    # its IPv4 addresses (first octet most significant)
    uint32_t n_sec_ips
    bucket_t ingress          # frames from the port (the pod's sending)
    bucket_t egress           # frames to the port (the pod's receiving)
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t rx_dropped       # frames from this port dropped at ingress
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t tx_dropped       # copies towards this port that were not written


cdef enum:                    # fdb_entry_t.kind
    FDB_LEARNED = 0           # ages, moves when the MAC is seen elsewhere
    FDB_STATIC = 1            # configured: never ages, not moved by learning
    FDB_PINNED = 2            # a port-secured port's own MAC: as static, and frames with
                              # it as source from anywhere else are dropped


cdef struct fdb_entry_t:      # 16 bytes: a million entries in 32 MB of table (load 1/2)
    uint64_t key              # network << 48 | mac; 0 = empty slot
    uint32_t seen_ms          # last time the source was seen: CLOCK_MONOTONIC in ms,
                              # modulo 2^32 (ages are differences; learned entries never
                              # live 49 days unseen, static ones do not age)
    uint16_t port             # local port id, or PEER_BASE + peer index
    uint16_t kind             # FDB_LEARNED, FDB_STATIC or FDB_PINNED


cdef struct tx_msg_t:          # one sendmmsg entry: queued datagrams sent as one (UDP GSO)
    uint32_t first            # its first datagram
    uint32_t count            # its datagrams, all seg_len long but the last
    uint32_t seg_len
    uint32_t total            # bytes
    uint16_t sock             # index of the sending socket
    uint16_t peer
    bint sealed               # a shorter datagram ended it


cdef struct peer_t:
    uint32_t ip               # IPv4, network byte order; 0 = free slot
    bint learned              # added by learn_peers (ages, capped), not configured
    uint64_t last_rx_ns       # the last datagram accepted from it
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t tx_dropped


cdef struct fdb_t:
    fdb_entry_t *slots
    uint64_t mask             # capacity - 1, capacity a power of two
    uint64_t count
    uint64_t max_entries      # learning stops here (counted as fdb_full)
    uint32_t aging_ms
    uint64_t multiplier       # the hash's secret (random, odd), new every start
    uint32_t shift            # 64 - log2(capacity): the hash keeps the product's top bits
    uint32_t *owned           # learned entries per port id / PEER_BASE + peer
    uint32_t max_per_port     # learned entries one port may hold
    uint32_t max_per_peer     # ... and one peer
    uint64_t sweep_at         # where the incremental expiry sweep goes on
    uint64_t learned          # new entries
    uint64_t moves            # a MAC seen on another port than before
    uint64_t full             # learn attempts refused: table full, or no slot within FDB_MAX_PROBE
    uint64_t limited          # learn attempts refused: the port or peer holds its maximum
    uint64_t expired

# NetworkPolicy as the data plane enforces it (see _policy.pxi): per pod
# port, one compiled table per direction, built by the control plane
# (vswitch/policy.py) and swapped in whole.

from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef enum:
    POL_INGRESS = 0
    POL_EGRESS = 1
    # What a packet is, for policy.
    FLOW_OTHER = 0                # not IP, or IP that cannot be parsed: denied where isolated
    FLOW_ALWAYS = 1               # ARP and IPv6 neighbour discovery: always pass
    FLOW_IP = 2                   # IPv4 or IPv6
    # How a verdict was reached (trace, verdict_t.how).
    HOW_OPEN = 0                  # no isolated pod on either end: not tracked
    HOW_ALWAYS = 1                # ARP, neighbour discovery
    HOW_CONNTRACK = 2             # a tracked connection
    HOW_RELATED = 3               # an ICMP error about a tracked connection
    HOW_RULES = 4                 # the rules decided (a new connection)
    HOW_REVALIDATED = 5           # a tracked connection checked again after a policy change
    HOW_FRAGMENT = 6              # a later fragment of a packet whose first was allowed
    MAX_SERVICE_RANGES = 16       # Service address ranges (set_service_ranges)


cdef struct pol_range_t:          # peer addresses lo..hi, allowed by `policy`
    ip_key_t lo                   # (_underlay.pxd: IPv4 mapped)
    ip_key_t hi
    uint32_t policy               # the policy's number + 1


cdef struct pol_l4_t:             # a protocol and destination ports lo..hi
    uint16_t lo
    uint16_t hi
    uint8_t proto


cdef struct pol_group_t:          # peers (sorted, disjoint ranges) x ports
    uint32_t first_range
    uint32_t n_ranges
    uint32_t first_l4
    uint32_t n_l4                 # 0: every protocol and port


cdef struct pol_dir_t:
    uint32_t isolating            # number + 1 of a policy isolating this direction; 0: open
    uint32_t n_groups
    pol_group_t *groups
    pol_range_t *ranges
    pol_l4_t *l4


cdef struct port_policy_t:        # a pod selected by some policy
    pol_dir_t dirs[2]             # POL_INGRESS, POL_EGRESS


cdef struct flow_t:               # one packet, as policy and conntrack see it
    uint8_t kind                  # FLOW_*
    uint8_t proto
    uint8_t tcp_flags
    bint has_ports                # TCP, UDP or SCTP with its ports (not a later fragment)
    bint first_fragment           # offset 0, more fragments follow
    bint later_fragment           # a fragment past the first: no transport header here
    uint32_t frag_id              # the identification, of either kind of fragment
    uint32_t frag_offset          # bytes: where a later fragment's data goes
    uint32_t l4_len               # bytes of the packet from the transport header on
    ip_key_t src
    ip_key_t dst
    uint16_t sport
    uint16_t dport
    bint icmp_error               # inner_*: the packet an ICMP error quotes
    uint8_t inner_proto
    ip_key_t inner_src
    ip_key_t inner_dst
    uint16_t inner_sport
    uint16_t inner_dport


cdef struct pol_end_t:            # one end of a packet's path, as policy sees it
    const port_t *pod             # the local pod whose tables judge this end (NULL: none)
    const port_policy_t *policy   # its tables, read once (the control plane swaps them whole)
    bint host                     # the end is a host port: the node routed the packet
    bint node                     # ... from the node's own address: ingress rules let it in
    bint service                  # ... to a Service address: egress is judged after its DNAT


cdef struct pol_path_t:           # where a packet goes, for policy_decide
    pol_end_t src
    pol_end_t dst
    uint16_t in_port              # port ids as conntrack records them (CT_NO_PORT: a peer)
    uint16_t out_port
    uint16_t owner                # the port a new connection is charged to


cdef struct services_t:           # the addresses kube-proxy DNATs (ClusterIPs)
    seqcount_t seq                # written by the control plane; workers read lock-free
    uint32_t n
    ip_key_t lo[MAX_SERVICE_RANGES]
    ip_key_t hi[MAX_SERVICE_RANGES]


cdef struct verdict_t:
    int reason                    # a drop reason, or -1: pass
    uint8_t how                   # HOW_*
    uint8_t direction             # POL_INGRESS or POL_EGRESS: of the deciding policy
    uint32_t policy               # the deciding policy's number + 1 (0: none)

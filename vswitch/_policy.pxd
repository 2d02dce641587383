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
    bint icmp_error               # related holds the connection an ICMP error is about
    ip_key_t src
    ip_key_t dst
    uint16_t sport
    uint16_t dport
    ct_key_t related


cdef struct verdict_t:
    int reason                    # a drop reason, or -1: pass
    uint8_t how                   # HOW_*
    uint8_t direction             # POL_INGRESS or POL_EGRESS: of the deciding policy
    uint32_t policy               # the deciding policy's number + 1 (0: none)

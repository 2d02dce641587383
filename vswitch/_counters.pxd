# Counters and drop reasons: every frame the data plane does not deliver is
# counted under one of these. The names (DROP_NAMES, _counters.pxi) follow
# this order; the control plane and clients take them from there.

from libc.stdint cimport uint64_t

cdef enum:  # drop reasons
    DROP_RUNT = 0             # shorter than an Ethernet header
    DROP_OVERSIZE             # payload longer than the network's MTU
    DROP_BAD_SOURCE           # multicast/broadcast source MAC
    DROP_SPOOFED_SOURCE       # source MAC, IPv4, IPv6 or ARP sender not the port's own
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
    DROP_POLICY_DENIED        # NetworkPolicy does not allow it (per copy when flooded)
    DROP_CONNTRACK_FULL       # allowed, but the connection table is full
    DROP_ND_SPOOFED           # IPv6 neighbour discovery claiming another's address or MAC
    DROP_CONNTRACK_POD_FULL   # allowed, but the pod that opens it holds its share of the table
    N_DROP_REASONS


cdef struct counters_t:       # switch-wide
    uint64_t drops[N_DROP_REASONS]
    uint64_t unicast          # frames delivered to one learned port or peer
    uint64_t flooded          # frames sent to every other port/peer of their network

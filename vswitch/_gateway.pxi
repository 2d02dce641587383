# Replies through the gateway. kube-proxy's Service DNAT lives in the node's
# namespace, behind the host port; a backend on the same network would
# answer its client straight over L2, past the node's conntrack, and the
# client would see a reply from the wrong address. So a connection that
# went from a host port to a pod, or to a peer (a backend on another node),
# is marked in conntrack (CT_VIA_GATEWAY), and its replies, from the pod or
# from the tunnel, go back to that host port, rewritten to its MAC, for the
# node to un-NAT (as Antrea does in its OVS pipeline). The backend's node
# needs nothing: the reply comes back to the client's node over L2. Only
# pods with such connections, and the tunnel while there are any to peers
# (ct_gateway_count), pay a lookup per frame. Connections from the node's
# own address need no steering (the pod answers its gateway anyway) and
# are not tracked here; the rest are charged to the pod that opened them
# (through the node), else to the one they reach.


cdef void gateway_track(ct_t *ct, const flow_t *f, uint16_t net, uint16_t gw_port,
                        uint16_t pod_port, uint16_t owner, uint32_t now_ms) noexcept nogil:
    """A frame from host port gw_port to pod_port (a pod's port, or
    CT_NO_PORT: a peer): track its connection (if the table has room)
    and, when it was opened from the gateway's side, mark it. An untracked
    TCP connection counts as opened here only on a SYN: a segment midway
    may answer a connection the pod opened."""
    if f.kind != FLOW_IP:
        return
    cdef bint src_is_a
    cdef int reason
    cdef ct_key_t other
    cdef ct_key_t key = ct_key(net, f.proto, &f.src, f.sport, &f.dst, f.dport, &f.dst, &src_is_a)
    cdef ct_entry_t *e = ct_find(ct, &key, now_ms)
    if e == NULL and f.proto == IPPROTO_TCP and \
            (f.tcp_flags & (TCP_SYN | TCP_ACK)) != TCP_SYN:
        return
    if e == NULL:
        # The node routing back a pod's answer to a connection it routed
        # the other way (the leg on the source's side is known): no new one.
        other = ct_key(net, f.proto, &f.src, f.sport, &f.dst, f.dport, &f.src, &src_is_a)
        e = ct_find(ct, &other, now_ms)
        if e != NULL:
            ct_touch(e, f, src_is_a, now_ms)
            return
        e = ct_insert(ct, &key, src_is_a, gw_port, pod_port, owner, now_ms, &reason)
        if e == NULL:
            return                      # full: this connection's replies go the plain way
    ct_touch(e, f, src_is_a, now_ms)
    if src_is_a == <bint>(e.flags & CT_ORIG_A) and e.in_port == gw_port \
            and e.out_port == pod_port:
        ct_mark_gateway(ct, e)


cdef int64_t gateway_of_reply(const ct_t *ct, const flow_t *f, uint16_t net, uint32_t pod_port,
                              uint32_t now_ms) noexcept nogil:
    """The host port a frame from pod_port (or CT_NO_PORT: the tunnel) must
    go back through, or -1."""
    if f.kind != FLOW_IP:
        return -1
    cdef bint src_is_a
    cdef ct_key_t key = ct_key(net, f.proto, &f.src, f.sport, &f.dst, f.dport, &f.src, &src_is_a)
    cdef ct_entry_t *e = ct_find(ct, &key, now_ms)
    if e == NULL or not e.flags & CT_VIA_GATEWAY or e.out_port != pod_port \
            or src_is_a == <bint>(e.flags & CT_ORIG_A):
        return -1
    return e.in_port

# Networks (see _networks.pxd).


cdef int networks_init(networks_t *t) noexcept nogil:
    t.vni_of = <uint32_t *>calloc(MAX_NETWORKS, sizeof(uint32_t))
    t.mtu_of = <uint16_t *>calloc(MAX_NETWORKS, sizeof(uint16_t))
    return 0 if t.vni_of != NULL and t.mtu_of != NULL else -1


cdef void networks_free(networks_t *t) noexcept nogil:
    free(t.vni_of)
    free(t.mtu_of)
    t.vni_of = NULL
    t.mtu_of = NULL


cdef inline bint network_declared(const networks_t *t, int network) noexcept nogil:
    return 0 < network < MAX_NETWORKS and t.vni_of[network] != 0


cdef inline uint16_t network_of_vni(const networks_t *t, uint32_t vni) noexcept nogil:
    # Linear: a node has few networks. VNI 0 is never a network's (0 marks
    # an undeclared id in vni_of).
    cdef uint16_t net
    if vni == 0:
        return 0
    for net in range(1, MAX_NETWORKS):
        if t.vni_of[net] == vni:
            return net
    return 0

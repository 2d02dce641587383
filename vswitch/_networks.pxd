# Networks: the VNI and pod MTU of each data-plane network id.

from libc.stdint cimport uint16_t, uint32_t

cdef enum:
    MAX_NETWORKS = 4096       # network ids 1..MAX_NETWORKS-1 (0 = none)


cdef struct networks_t:
    uint32_t *vni_of          # 0: the id is not declared
    uint16_t *mtu_of

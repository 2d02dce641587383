# The Linux system interfaces the data plane calls: vectored I/O, UDP
# sockets with GSO/GRO control messages, epoll. Included by _fastpath.pxd.

from libc.stdint cimport uint16_t, uint32_t
from posix.time cimport timespec

cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t writev(int fd, const iovec *iov, int iovcnt) nogil

cdef extern from "<netinet/in.h>":
    struct in_addr:
        uint32_t s_addr
    struct sockaddr_in:
        uint16_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in6:
        uint16_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    int AF_INET, AF_INET6
    uint16_t htons(uint16_t v) nogil
    uint32_t htonl(uint32_t v) nogil
    uint32_t ntohl(uint32_t v) nogil

cdef extern from "<sys/socket.h>":
    struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *m) nogil
    cmsghdr *CMSG_NXTHDR(msghdr *m, cmsghdr *c) nogil
    unsigned char *CMSG_DATA(cmsghdr *c) nogil
    size_t CMSG_LEN(size_t n) nogil
    int MSG_DONTWAIT
    int sendmmsg(int fd, mmsghdr *msgs, unsigned int n, int flags) nogil
    int recvmmsg(int fd, mmsghdr *msgs, unsigned int n, int flags, timespec *timeout) nogil

cdef extern from "<sys/epoll.h>":
    ctypedef union epoll_data_t:
        uint32_t u32
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int EPOLLIN, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CLOEXEC
    int epoll_create1(int flags) nogil
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event) nogil
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout) nogil

cdef extern from "<unistd.h>":
    int close(int fd) nogil


cdef enum:
    SOL_UDP = 17
    UDP_SEGMENT = 103         # linux/udp.h: send one buffer as equal-size datagrams (GSO)
    UDP_GRO = 104             # receive equal-size datagrams of a flow as one buffer
    CMSG_BUF = 32             # room for one cmsghdr carrying an int

# How forwarding threads and the control plane share tables: C11-style
# atomics (GCC builtins), a mutex for writers, and sequence counters that
# let readers go without any lock (included by _fastpath.pxd).
#
# The read protocol of a table under a seqcount_t: a reader notes the count
# (seq_read_begin: even, no write in progress), reads, and reads again if the
# count moved (seq_read_retry). Writers (one at a time: the table's mutex, or
# the control plane when it is the only writer) make the count odd, write, and
# make it even again. Tables never shrink under a reader: what a writer
# removes is reused or freed only after every worker has passed a quiescent
# point (Datapath.reclaim, _workers.pxi), so a reader that raced a write reads
# stale but valid memory, and then reads again.

from libc.stdint cimport uint32_t, uint64_t

cdef extern from *:
    """
    #include <pthread.h>
    #if defined(__x86_64__) || defined(__i386__)
    #define VS_PAUSE() __builtin_ia32_pause()
    #else
    #define VS_PAUSE() do {} while (0)
    #endif
    typedef struct { unsigned seq; } seqcount_t;
    static inline unsigned seq_read_begin(const seqcount_t *s) {
        unsigned v;
        while ((v = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE)) & 1)
            VS_PAUSE();
        return v;
    }
    static inline int seq_read_retry(const seqcount_t *s, unsigned v) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        return __atomic_load_n(&s->seq, __ATOMIC_RELAXED) != v;
    }
    static inline void seq_write_begin(seqcount_t *s) {
        __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
    }
    static inline void seq_write_end(seqcount_t *s) {
        __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELEASE);
    }
    typedef struct { char held; } spin_t;
    static inline void spin_lock(spin_t *s) {
        while (__atomic_test_and_set(&s->held, __ATOMIC_ACQUIRE))
            while (__atomic_load_n(&s->held, __ATOMIC_RELAXED))
                VS_PAUSE();
    }
    static inline void spin_unlock(spin_t *s) { __atomic_clear(&s->held, __ATOMIC_RELEASE); }
    static inline uint64_t load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline uint32_t load_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void store_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void store_release_u64(uint64_t *p, uint64_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    static inline void add_u64(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline int load_acquire_int(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void store_release_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void *load_acquire_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void store_release_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void full_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    ctypedef struct seqcount_t:
        unsigned seq
    unsigned seq_read_begin(const seqcount_t *s) nogil
    bint seq_read_retry(const seqcount_t *s, unsigned v) nogil
    void seq_write_begin(seqcount_t *s) nogil
    void seq_write_end(seqcount_t *s) nogil
    ctypedef struct spin_t:
        char held
    void spin_lock(spin_t *s) nogil
    void spin_unlock(spin_t *s) nogil
    uint64_t load_u64(const uint64_t *p) nogil
    void store_u64(uint64_t *p, uint64_t v) nogil
    uint32_t load_u32(const uint32_t *p) nogil
    void store_u32(uint32_t *p, uint32_t v) nogil
    void store_release_u64(uint64_t *p, uint64_t v) nogil
    void add_u64(uint64_t *p, uint64_t v) nogil
    int load_acquire_int(const int *p) nogil
    void store_release_int(int *p, int v) nogil
    void *load_acquire_ptr(void * const *p) nogil
    void store_release_ptr(void **p, void *v) nogil
    void full_fence() nogil

cdef extern from "<pthread.h>":
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef unsigned long pthread_t
    pthread_t pthread_self() nogil
    int pthread_setname_np(pthread_t thread, const char *name) nogil
    int pthread_mutex_init(pthread_mutex_t *m, const void *attr) nogil
    int pthread_mutex_destroy(pthread_mutex_t *m) nogil
    int pthread_mutex_lock(pthread_mutex_t *m) nogil
    int pthread_mutex_trylock(pthread_mutex_t *m) nogil
    int pthread_mutex_unlock(pthread_mutex_t *m) nogil

cdef extern from "<sys/eventfd.h>":
    int eventfd(unsigned int initval, int flags) nogil
    int EFD_NONBLOCK, EFD_CLOEXEC

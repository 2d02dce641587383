# Token buckets (bucket_t, _ports.pxd): per-port rate limits. C-only helpers.

cdef inline void bucket_set(bucket_t *b, double bits_per_s, double burst_bits,
                            uint64_t now) noexcept nogil:
    b.rate = bits_per_s / 8e9
    # At least one maximal superframe, so that a limited TSO port still moves.
    b.burst = max(burst_bits / 8, 65536.0) if bits_per_s > 0 else 0
    b.tokens = b.burst
    b.last_ns = now


cdef inline bint bucket_take(bucket_t *b, ssize_t n, uint64_t now) noexcept nogil:
    """Refill for the time since the last call, then take n bytes if there
    are enough tokens; False: over the rate."""
    b.tokens = min(b.burst, b.tokens + (now - b.last_ns) * b.rate)
    b.last_ns = now
    if b.tokens < n:
        return False
    b.tokens -= n
    return True


cdef inline bint bucket_would_take(const bucket_t *b, ssize_t n, uint64_t now) noexcept nogil:
    """bucket_take without taking (a trace)."""
    return min(b.burst, b.tokens + (now - b.last_ns) * b.rate) >= n

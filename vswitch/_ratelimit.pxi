# Token buckets (bucket_t, _ports.pxd): per-port rate limits. C-only helpers.

# A bucket is shared by every worker that serves the port: a refill and a
# take happen under its spin lock (a few instructions), so that the limit
# holds exactly across workers.

cdef inline void bucket_set(bucket_t *b, double bits_per_s, double burst_bits,
                            uint64_t now) noexcept nogil:
    spin_lock(&b.lock)
    b.rate = bits_per_s / 8e9
    # At least one maximal superframe, so that a limited TSO port still moves.
    b.burst = max(burst_bits / 8, 65536.0) if bits_per_s > 0 else 0
    b.tokens = b.burst
    b.last_ns = now
    spin_unlock(&b.lock)


cdef inline bint bucket_take(bucket_t *b, ssize_t n, uint64_t now) noexcept nogil:
    """Refill for the time since the last call, then take n bytes if there
    are enough tokens; False: over the rate."""
    cdef bint ok = True
    spin_lock(&b.lock)
    if now > b.last_ns:             # (another worker's clock read may be later than ours)
        b.tokens = min(b.burst, b.tokens + (now - b.last_ns) * b.rate)
        b.last_ns = now
    if b.tokens < n:
        ok = False
    else:
        b.tokens -= n
    spin_unlock(&b.lock)
    return ok


cdef inline bint bucket_would_take(const bucket_t *b, ssize_t n, uint64_t now) noexcept nogil:
    """bucket_take without taking (a trace)."""
    return min(b.burst, b.tokens + (now - b.last_ns if now > b.last_ns else 0) * b.rate) >= n

# The control methods of capture: sessions and the ring's records.
# One class of Datapath's chain of bases (_fastpath.pxd); they run on the
# event loop's thread and may use Python objects freely.


cdef class _CaptureControl(_PolicyControl):
    def capture_add(self, uint32_t points, int64_t port=-1, uint32_t snaplen=65535, program=()):
        """Start a session: frames at `points` (CAP_* bits) on `port` (-1:
        any) that the classic BPF `program` ([(code, jt, jf, k)], empty:
        all) accepts. Returns its id (a bit of the records' masks)."""
        return cap_add(&self.cap, points, port, snaplen, program)

    def capture_remove(self, int session):
        """Stop a session; with none left, capture costs nothing again."""
        cap_remove(&self.cap, session)

    def capture_read(self, int max_records=4096):
        """Take records from the ring: [(ts_ns, mask, port, point, reason
        (None or its name), orig_len, bytes, detail)]."""
        return cap_read(&self.cap, max_records)

    @property
    def cap_dropped(self):
        """Capture records lost because the ring was full."""
        return self.cap.dropped

# Trace: a frame from a port through the real pipeline (Datapath._switch) on
# a worker of its own whose sink (trace_t, _trace.pxd) records each step
# where the pipeline would learn, send, count or commit a connection: one
# pipeline, so a trace cannot drift from what the switch does. The frame is
# a copy; nothing is sent, learned, counted or tracked. Not per frame:
# trace_frame runs once per `vswitchctl trace`.


cdef inline void trace_step(trace_t *t, int kind, int reason, int64_t port, uint64_t mac,
                            int64_t value) noexcept nogil:
    cdef trace_step_t *s
    if t.n < t.size:
        s = &t.steps[t.n]
        s.kind, s.reason, s.port, s.mac, s.value = kind, reason, port, mac, value
    t.n += 1


cdef inline void trace_verdict(trace_t *t, int64_t port, const verdict_t *v) noexcept nogil:
    """Policy's verdict towards port (-1: the peers), when a policy applies."""
    if v.how != HOW_OPEN:
        trace_step(t, TRACE_POLICY, v.reason, port, 0, 0)
        if t.n <= t.size:
            t.steps[t.n - 1].verdict = v[0]


cdef inline int64_t trace_destination(trace_t *t, uint32_t in_id, const unsigned char *frame,
                                      int64_t out) noexcept nogil:
    """The FDB's answer as the pipeline has it: learning (which a trace does
    not do) would have put the source at in_id, so a frame to its own
    source MAC is a loop."""
    if out != DEST_LOOP and not is_multicast(frame) and mac48(frame) == mac48(frame + 6):
        out = DEST_LOOP
    trace_step(t, TRACE_FDB, -1, out, mac48(frame), 0)
    return out


HOW_NAMES = {HOW_ALWAYS: "always (ARP, neighbour discovery)", HOW_CONNTRACK: "conntrack",
             HOW_RELATED: "conntrack (ICMP error of a connection)", HOW_RULES: "rules",
             HOW_REVALIDATED: "conntrack, checked again after a policy change",
             HOW_FRAGMENT: "a later fragment of an allowed first one"}


cdef list trace_frame(Datapath dp, uint32_t port_id, bytes frame):
    """The steps of `frame` from port_id, as `vswitchctl trace` shows them."""
    cdef port_t *inp = dp._port(port_id)
    cdef uint16_t net = inp.network
    cdef ssize_t n = len(frame)
    cdef unsigned char *buf = <unsigned char *>malloc(FRAME_HEADROOM + max(n, 1))
    cdef int size = 2 * (dp.ports.limit + dp.peers.n_members) + 16
    cdef trace_t t
    cdef worker_t tw
    t.steps, t.n, t.size = <trace_step_t *>calloc(size, sizeof(trace_step_t)), 0, size
    if buf == NULL or t.steps == NULL:
        free(buf)
        free(t.steps)
        raise MemoryError()
    # The trace's own worker: scratch counters and GRO, the tunnel's
    # settings read (never its queues: a trace sends nothing).
    memset(&tw, 0, sizeof(worker_t))
    tw.tx, tw.rx, tw.trace = dp.w.tx, dp.w.rx, &t
    cdef unsigned char *f = buf + FRAME_HEADROOM
    memcpy(f, <const unsigned char *>frame, n)
    memset(f - VNET_HLEN, 0, VNET_HLEN)
    try:
        dp._switch(&tw, port_id, inp, net, f - VNET_HLEN, f, n, monotonic_ns())
        steps = [{"step": "ingress", "port": port_id, "network": net, "length": n,
                  "port_security": bool(inp.secured)}]
        return steps + trace_steps(dp, &t, port_id, net, frame)
    finally:
        free(buf)
        free(t.steps)


cdef list trace_steps(Datapath dp, const trace_t *t, uint32_t port_id, uint16_t net,
                      bytes frame):
    """The sink's records as steps: what happens to the frame itself in
    order, then where its copies go (ports and peers), policy's verdicts on
    them, and the encapsulation of those to peers."""
    steps, policy, copy_drops, encaps = [], [], [], []
    ports, peers, output, denied, delivered, fdb_out = [], [], None, [], 0, -1
    cdef const trace_step_t *s
    for i in range(min(t.n, t.size)):
        s = &t.steps[i]
        if s.kind == TRACE_CHECKS:
            steps.append({"step": "checks", "verdict": "pass"})
        elif s.kind == TRACE_RATE:
            steps.append({"step": "rate_limit", "direction": "ingress" if s.port < 0 else "egress",
                          "port": port_id if s.port < 0 else s.port,
                          "verdict": "pass" if s.reason < 0 else DROP_NAMES[s.reason]})
        elif s.kind == TRACE_LEARN:
            if s.value >= 0 and s.value != port_id:
                steps.append({"step": "learn", "mac": mac_to_str(s.mac), "pinned_to": s.value})
            else:
                steps.append({"step": "learn", "mac": mac_to_str(s.mac),
                              "known_at": None if s.port < 0 else s.port,
                              "moves": s.port >= 0 and s.port != port_id})
        elif s.kind == TRACE_ARP:
            steps.append({"step": "arp_suppression", "target": ".".join(map(str, frame[38:42])),
                          "mac": mac_to_str(s.mac), "verdict": "answered to the ingress port"})
        elif s.kind == TRACE_ND:
            steps.append({"step": "nd_suppression",
                          "target": str(ipaddress.IPv6Address(frame[62:78])),
                          "mac": mac_to_str(s.mac), "verdict": "answered to the ingress port"})
        elif s.kind == TRACE_GATEWAY_REPLY:
            steps.append({"step": "gateway_reply", "port": s.port, "mac": mac_to_str(s.mac),
                          "why": "a reply of a connection that came in through the host port"})
            output = {"step": "output", "ports": ports, "peers": peers}
        elif s.kind == TRACE_FDB:
            dst, fdb_out = mac_to_str(s.mac), s.port
            if s.port == DEST_LOOP:
                steps.append({"step": "fdb", "mac": dst, "result": "learned on the ingress port"})
            elif s.port == DEST_FLOOD:
                steps.append({"step": "fdb", "mac": dst, "result": "multicast"
                              if is_multicast(<const unsigned char *>frame) else "unknown"})
                output = {"step": "flood", "ports": ports, "peers": peers}
            else:
                steps.append({"step": "fdb", "mac": dst, "result": "learned", "port": s.port})
                output = {"step": "output", "ports": ports, "peers": peers}
        elif s.kind == TRACE_POLICY:
            to = "peers" if s.port < 0 else s.port
            policy.append({"step": "policy",
                           "verdict": "pass" if s.reason < 0 else DROP_NAMES[s.reason],
                           "how": HOW_NAMES[s.verdict.how],
                           "direction": ("ingress", "egress")[s.verdict.direction]
                           if s.verdict.policy else None,
                           "policy": s.verdict.policy or None, "to": to})
            if s.reason >= 0:
                denied.append(s.reason)
                if s.port >= 0:
                    ports.append(s.port)
                elif fdb_out >= PEER_BASE:
                    peers.append(fdb_out)
                else:
                    peers.extend(PEER_BASE + p for p in network_peers(&dp.peers, net))
        elif s.kind == TRACE_SEND:
            ports.append(s.port)
            delivered += 1
        elif s.kind == TRACE_ENCAP:
            peers.append(s.port)
            delivered += 1
            encaps.append(trace_encap(dp, s.port, net, s.value, len(frame), "send"))
        elif s.kind == TRACE_DROP and s.value:          # the frame itself
            steps.append({"step": "drop", "reason": DROP_NAMES[s.reason]})
        elif s.kind == TRACE_DROP and s.port >= PEER_BASE:
            peers.append(s.port)
            encaps.append(trace_encap(dp, s.port, net, -1, len(frame),
                                      "drop: " + DROP_NAMES[s.reason]))
        elif s.kind == TRACE_DROP:
            ports.append(s.port)
            copy_drops.append({"step": "drop", "reason": DROP_NAMES[s.reason], "port": s.port})
    if output is not None and (ports or peers):
        steps.append(output)
    steps += policy + copy_drops
    # (wraparound is off here: no steps[-1])
    if denied and not delivered and not (steps and steps[len(steps) - 1]["step"] == "drop"):
        steps.append({"step": "drop", "reason": DROP_NAMES[denied[len(denied) - 1]]})
    return steps + encaps


cdef dict trace_encap(Datapath dp, int64_t peer, uint16_t net, int64_t sport, ssize_t n,
                      str verdict):
    return {"step": "encap", "peer": peer, "vni": dp.networks.vni_of[net],
            "udp_src_port": sport if sport >= 0 else None, "udp_dst_port": dp.peers.udp_port,
            "outer_length": n + dp.w.tx.outer_overhead, "verdict": verdict}

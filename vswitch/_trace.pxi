# Trace: a frame from a port through the pipeline's own checks and lookup
# (Datapath._check, _destination), without learning, sending or counting,
# reported step by step. Beside the pipeline, not in it: nothing here runs
# per frame.


cdef list trace_frame(Datapath dp, uint32_t port_id, bytes frame):
    cdef port_t *inp = dp._port(port_id)
    cdef uint16_t net = inp.network
    cdef unsigned char hdr[VNET_HLEN]
    memset(hdr, 0, VNET_HLEN)
    cdef const unsigned char *f = frame
    cdef ssize_t n = len(frame)
    steps = [{"step": "ingress", "port": port_id, "network": net, "length": n,
              "port_security": bool(inp.secured)}]
    cdef int reason = dp._check(inp, net, hdr, f, n)
    if reason >= 0:
        return steps + [{"step": "drop", "reason": DROP_NAMES[reason]}]
    steps.append({"step": "checks", "verdict": "pass"})
    cdef uint64_t src = mac48(f + 6)
    cdef int64_t known = fdb_lookup(&dp.fdb, net, src, monotonic_ns())
    cdef int64_t pinned = fdb_pinned_port(&dp.fdb, net, src)
    if pinned >= 0 and pinned != port_id:
        return steps + [{"step": "learn", "mac": mac_to_str(src), "pinned_to": pinned},
                        {"step": "drop", "reason": DROP_NAMES[DROP_MAC_PINNED]}]
    steps.append({"step": "learn", "mac": mac_to_str(src),
                  "known_at": None if known < 0 else known, "moves": known >= 0 and known != port_id})
    cdef uint64_t known_mac = arp_request_target(&dp.neigh, net, f, n)
    if known_mac:
        return steps + [{"step": "arp_suppression", "target": ".".join(map(str, f[38:42])),
                         "mac": mac_to_str(known_mac), "verdict": "answered to the ingress port"}]
    known_mac = nd_request_target(&dp.neigh, net, f, n)
    if known_mac:
        return steps + [{"step": "nd_suppression",
                         "target": str(ipaddress.IPv6Address(bytes(f[62:78]))),
                         "mac": mac_to_str(known_mac), "verdict": "answered to the ingress port"}]
    cdef int64_t out = -1
    if not inp.router and ct_gateway_count(&dp.ct, port_id)[0]:
        out = dp._gateway_of(port_id, net, f, n, monotonic_ns())
        if out >= 0:
            steps.append({"step": "gateway_reply", "port": out,
                          "mac": mac_to_str(dp.ports.slots[out].mac),
                          "why": "a reply of a connection that came in through the host port"})
            steps.append({"step": "output", "ports": [out], "peers": []})
            return steps
    out = dp._destination(port_id, net, f, monotonic_ns())
    dst = mac_to_str(mac48(f))
    if out == DEST_LOOP:
        return steps + [{"step": "fdb", "mac": dst, "result": "learned on the ingress port"},
                        {"step": "drop", "reason": DROP_NAMES[DROP_LOOP]}]
    if out == DEST_FLOOD:
        steps.append({"step": "fdb", "mac": dst,
                      "result": "multicast" if is_multicast(f) else "unknown"})
        routers_only = not inp.router and for_routers(f, n)
        ports = [i for i in range(dp.ports.limit) if i != port_id and
                 dp.ports.slots[i].fd >= 0 and dp.ports.slots[i].network == net
                 and (dp.ports.slots[i].router or not routers_only)]
        peers = [] if routers_only else network_peers(&dp.peers, net)
        if not ports and not peers:
            return steps + [{"step": "drop", "reason": DROP_NAMES[DROP_NO_ROUTE]}]
        output = {"step": "flood", "ports": ports, "peers": [PEER_BASE + p for p in peers]}
    else:
        steps.append({"step": "fdb", "mac": dst, "result": "learned", "port": out})
        output = {"step": "output", "ports": [out] if out < PEER_BASE else [],
                  "peers": [out] if out >= PEER_BASE else []}
    steps.append(output)
    # NetworkPolicy, per destination (the peers share one verdict).
    denied = 0
    for dest in output["ports"] + output["peers"][:1]:
        step = trace_policy(dp, port_id, NULL if dest >= PEER_BASE else &dp.ports.slots[dest], net,
                            f, n)
        if step is not None:
            steps.append({**step, "to": "peers" if dest >= PEER_BASE else dest})
            denied += step["verdict"] != "pass"
    if denied and denied == len(output["ports"]) + bool(output["peers"]):
        return steps + [{"step": "drop", "reason": DROP_NAMES[DROP_POLICY_DENIED]}]
    for dest in output["peers"]:       # (not steps[-1]: wraparound is off here)
        sport = dp.tx.sport[tunnel_sender(&dp.tx, f, n)] if dp.tx.n_senders else None
        too_big = n + dp.tx.outer_overhead > dp.tx.underlay_mtu
        steps.append({"step": "encap", "peer": dest, "vni": dp.networks.vni_of[net],
                      "udp_src_port": sport, "udp_dst_port": dp.peers.udp_port,
                      "outer_length": n + dp.tx.outer_overhead,
                      "verdict": "drop: too_big" if too_big else "send"})
    return steps


HOW_NAMES = {HOW_ALWAYS: "always (ARP, neighbour discovery)", HOW_CONNTRACK: "conntrack",
             HOW_RELATED: "conntrack (ICMP error of a connection)", HOW_RULES: "rules",
             HOW_REVALIDATED: "conntrack, checked again after a policy change",
             HOW_FRAGMENT: "a later fragment of an allowed first one"}


cdef object trace_policy(Datapath dp, uint32_t port_id, port_t *out, uint16_t net,
                         const unsigned char *f, ssize_t n):
    """The policy verdict on a frame from port_id to out (NULL: the
    peers), as the pipeline reaches it; None when no policy applies."""
    cdef verdict_t v
    dp._policy(port_id, &dp.ports.slots[port_id], out, net, f, n, monotonic_ns(), False, &v)
    if v.how == HOW_OPEN:
        return None
    return {"step": "policy", "verdict": "pass" if v.reason < 0 else DROP_NAMES[v.reason],
            "how": HOW_NAMES[v.how],
            "direction": ("ingress", "egress")[v.direction] if v.policy else None,
            "policy": v.policy or None}

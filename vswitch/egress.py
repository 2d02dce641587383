"""The node's own stack where it routes for pods: a host port's sysctls
(no Router Advertisements or Redirects taken, forwarding for masquerading
networks), and what the node lacks for pods to reach outside."""

from __future__ import annotations


def refuse_router_messages(ifname: str):
    """The host port's stack takes no Router Advertisements or Redirects
    (defence in depth behind the data plane's RA guard): pods must never
    set the node's routes."""
    for key in ("accept_ra", "accept_redirects"):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{ifname}/{key}", "w") as f:
                f.write("0")
        except FileNotFoundError:       # no IPv6 on this interface: nothing to refuse
            return


def route_for_pods(ifname: str):
    """The host port of a masquerading network routes pods' traffic: IPv4
    forwarding on for packets it receives, loose reverse-path filtering
    (pods' sources are on-link here, but replies of the node's NAT may not
    look so to a strict filter), and no ICMP redirects: Service traffic
    leaves by the port it came in, and a redirect would send the client
    straight to the backend, past the DNAT (the kernel still sends them
    while net.ipv4.conf.all.send_redirects is 1: egress_checks says so)."""
    for key, value in (("forwarding", "1"), ("rp_filter", "2"), ("send_redirects", "0")):
        with open(f"/proc/sys/net/ipv4/conf/{ifname}/{key}", "w") as f:
            f.write(value)


def egress_checks(networks) -> list[str]:
    """Why pods of masquerading networks could not reach outside, as the
    operator should read it: replies come back in through the uplinks (the
    interfaces of the IPv4 default routes), which must forward them."""
    def but(nets) -> str:
        return f"network {', '.join(n.name for n in nets)}: masquerade is on, but"
    out = []
    six = [n for n in networks if n.masquerade and n.subnet6]
    if six and _sysctl("net/ipv6/conf/all/forwarding") == "0":
        out.append(f"{but(six)} net.ipv6.conf.all.forwarding is 0: the node does not route "
                   "pods' IPv6 (sysctl -w net.ipv6.conf.all.forwarding=1)")
    four = [n for n in networks if n.masquerade and n.subnet]
    if not four:
        return out
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        uplinks = sorted({ipr.get_links(r.get_attr("RTA_OIF"))[0].get_attr("IFLA_IFNAME")
                          for r in ipr.get_default_routes(family=2) if r.get_attr("RTA_OIF")})
    what = but(four)
    if not uplinks:
        return out + [f"{what} this node has no IPv4 default route: pods' traffic to outside "
                      "has nowhere to go"]
    if _sysctl("net/ipv4/conf/all/send_redirects") == "1":
        out.append(f"{what} net.ipv4.conf.all.send_redirects is 1: the node sends pods ICMP "
                   "redirects for Service traffic it forwards back out the host port, which "
                   "would route them past the Service's DNAT (sysctl -w "
                   "net.ipv4.conf.all.send_redirects=0)")
    for ifname in uplinks:
        if _sysctl(f"net/ipv4/conf/{ifname}/forwarding") == "0":
            out.append(f"{what} net.ipv4.conf.{ifname}.forwarding is 0: replies from outside "
                       f"cannot reach pods (sysctl -w net.ipv4.conf.{ifname}.forwarding=1, or "
                       "net.ipv4.ip_forward=1)")
    return out


def _sysctl(key: str) -> str | None:
    try:
        with open(f"/proc/sys/{key}") as f:
            return f.read().strip()
    except OSError:
        return None

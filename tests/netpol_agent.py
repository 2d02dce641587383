"""A pod of the NetworkPolicy matrix, run inside its namespace:

    netpol_agent.py serve                 echo on TCP and UDP ports 80, 81 and 53 (IPv4, IPv6)
    netpol_agent.py probe JSON TIMEOUT    connect to [[ip, "tcp"|"udp", port], ...]
                                          at once; print [true|false, ...] (JSON)

A TCP probe succeeds when the echo of its bytes comes back, a UDP probe
when a datagram sent (twice, half the timeout apart) is echoed."""

import asyncio
import json
import socket
import sys

PORTS = (80, 81, 53)


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def serve():
    async def echo(reader, writer):
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    loop = asyncio.get_running_loop()
    for port in PORTS:
        await asyncio.start_server(echo, ["0.0.0.0", "::"], port)    # IPv6 one: V6ONLY
        for family, anywhere in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((anywhere, port))
            await loop.create_datagram_endpoint(Echo, sock=sock)
    print("ready", flush=True)
    await asyncio.Event().wait()


class Reply(asyncio.DatagramProtocol):
    def __init__(self):
        self.got = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        if not self.got.done():
            self.got.set_result(data)


async def probe(ip, proto, port, timeout):
    try:
        if proto == "tcp":
            reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
            writer.write(b"hello")
            ok = await asyncio.wait_for(reader.readexactly(5), timeout) == b"hello"
            writer.close()
            return ok
        transport, reply = await asyncio.get_running_loop().create_datagram_endpoint(
            Reply, remote_addr=(ip, port))
        try:
            for _ in range(2):
                transport.sendto(b"hello")
                try:
                    return await asyncio.wait_for(asyncio.shield(reply.got), timeout / 2) == b"hello"
                except asyncio.TimeoutError:
                    continue
            return False
        finally:
            transport.close()
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return False


async def probe_all(targets, timeout):
    return await asyncio.gather(*(probe(ip, proto, port, timeout) for ip, proto, port in targets))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve())
    else:
        print(json.dumps(asyncio.run(probe_all(json.loads(sys.argv[2]), float(sys.argv[3])))))

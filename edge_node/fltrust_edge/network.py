"""Network peers of the node, read from the Linux kernel's TCP tables.

The heartbeat reports how many distinct remote addresses the node has
established TCP connections with, split into known peers (the allowlist, the
MQTT broker and loopback) and unknown ones. A node that suddenly talks to
unknown hosts loses trust at the coordinator.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
# The "st" column of /proc/net/tcp is the socket state, and 01 is TCP_ESTABLISHED.
TCP_ESTABLISHED = "01"


def _decode_address(hex_address: str) -> IPAddress:
    """Decode the address part of ``/proc/net/tcp*``'s ``rem_address`` column.

    The kernel prints the address as 32-bit words in host byte order, so on a
    little-endian machine every 4-byte group is reversed.
    """
    raw = bytes.fromhex(hex_address)
    if len(raw) not in (4, 16):
        raise ValueError(f"address has {len(raw)} bytes, expected 4 or 16")
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    if socket.htonl(1) != 1:
        words = [word[::-1] for word in words]
    address = ipaddress.ip_address(b"".join(words))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_tcp_table(text: str) -> set[IPAddress]:
    """Return the remote addresses of the established connections in a ``/proc/net/tcp*`` table."""
    peers: set[IPAddress] = set()
    for line in text.splitlines()[1:]:
        columns = line.split()
        if len(columns) < 4 or columns[3] != TCP_ESTABLISHED:
            continue
        try:
            peers.add(_decode_address(columns[2].split(":")[0]))
        except ValueError:
            continue
    return peers


def established_peers(tables: Iterable[Path] = TCP_TABLES) -> set[IPAddress]:
    """Return the remote addresses of all established TCP connections of this host.

    A missing table (no IPv6, or not Linux) counts as no connections.
    """
    peers: set[IPAddress] = set()
    for table in tables:
        try:
            peers |= parse_tcp_table(table.read_text())
        except OSError:
            continue
    return peers


class PeerMonitor:
    """Counts known and unknown TCP peers.

    Known are the loopback addresses, the addresses of the MQTT broker and the
    configured ``known_peers`` (addresses or networks such as ``192.168.1.0/24``).
    """

    def __init__(self, known_peers: Iterable[str], tables: Iterable[Path] = TCP_TABLES) -> None:
        """Parse the allowlist, raising ValueError on an invalid address or network."""
        self._networks: list[IPNetwork] = [
            ipaddress.ip_network(peer, strict=False) for peer in known_peers
        ]
        self._broker: set[IPAddress] = set()
        self._tables = tuple(tables)

    def add_broker(self, host: str, port: int) -> None:
        """Resolve the broker's host name and count its addresses as known."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            _LOGGER.warning("Cannot resolve MQTT broker %s for the peer allowlist: %s", host, err)
            return
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            self._broker.add(address)

    def is_known(self, address: IPAddress) -> bool:
        """Return whether ``address`` is loopback, the broker or in the allowlist."""
        if address.is_loopback or address in self._broker:
            return True
        return any(address in network for network in self._networks)

    def count(self) -> tuple[int, int]:
        """Return the numbers of known and unknown peers right now."""
        peers = established_peers(self._tables)
        known = sum(1 for peer in peers if self.is_known(peer))
        return known, len(peers) - known

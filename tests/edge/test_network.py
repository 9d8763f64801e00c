"""Tests of TCP peer counting from the kernel's tables."""

import ipaddress
import socket

import pytest
from fltrust_edge.network import PeerMonitor, parse_tcp_table

TCP4 = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 1 1
   1: 0F02000A:A1B2 0101A8C0:075B 01 00000000:00000000 00:00000000 00000000  1000        0 2 1
   2: 0F02000A:A1B4 0101A8C0:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 3 1
   3: 0F02000A:A1B6 08080808:0035 01 00000000:00000000 00:00000000 00000000  1000        0 4 1
   4: 0F02000A:A1B8 04040808:0035 06 00000000:00000000 00:00000000 00000000  1000        0 5 1
"""

TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:A000 01 0 0
   1: 0000000000000000FFFF00000F02000A:1F90 0000000000000000FFFF00000901A8C0:A002 01 0 0
   2: 000080FE00000000FF0000FE0200005E:1F90 B80D0120000000000000000001000000:A004 01 0 0
"""


# The sample tables were written on a little-endian machine.
little_endian = pytest.mark.skipif(socket.htonl(1) == 1, reason="tables are little-endian")


@little_endian
def test_parse_ipv4_table():
    peers = parse_tcp_table(TCP4)

    assert peers == {
        ipaddress.ip_address("192.168.1.1"),
        ipaddress.ip_address("8.8.8.8"),
    }


@little_endian
def test_parse_ipv6_table():
    peers = parse_tcp_table(TCP6)

    assert peers == {
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("192.168.1.9"),
        ipaddress.ip_address("2001:db8::1"),
    }


def test_parse_skips_malformed_lines():
    assert parse_tcp_table("header\n garbage\n 1: x y 01\n") == set()


@little_endian
def test_peer_monitor_splits_known_and_unknown(tmp_path):
    (tmp_path / "tcp").write_text(TCP4)
    (tmp_path / "tcp6").write_text(TCP6)
    monitor = PeerMonitor(["192.168.1.0/24"], tables=[tmp_path / "tcp", tmp_path / "tcp6"])

    known, unknown = monitor.count()

    assert known == 3
    assert unknown == 2


def test_peer_monitor_counts_broker_as_known(tmp_path):
    (tmp_path / "tcp").write_text(TCP4)
    monitor = PeerMonitor([], tables=[tmp_path / "tcp"])
    monitor.add_broker("8.8.8.8", 1883)

    assert monitor.is_known(ipaddress.ip_address("8.8.8.8"))
    assert monitor.is_known(ipaddress.ip_address("127.0.0.1"))
    assert not monitor.is_known(ipaddress.ip_address("192.168.1.1"))


def test_peer_monitor_missing_tables(tmp_path):
    monitor = PeerMonitor([], tables=[tmp_path / "absent"])

    assert monitor.count() == (0, 0)


def test_peer_monitor_sees_real_loopback_connection():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            with accepted:
                known, _ = PeerMonitor([]).count()

    assert known >= 1

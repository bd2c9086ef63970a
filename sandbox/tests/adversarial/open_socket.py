# expect: violation
import socket


def test_socket():
    socket.create_connection(("10.0.0.1", 80), timeout=1)

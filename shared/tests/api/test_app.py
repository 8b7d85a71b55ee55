"""The listening socket every app serves from."""

import socket

from comfy_shared.api.app import _listen


def test_connections_send_their_answers_at_once() -> None:
    """Nagle off on every accepted connection: with it on, a second request on a kept-alive
    connection waited ~40 ms for the client's delayed ACK before its answer went out."""
    with (
        _listen("127.0.0.1", 0, prog="test") as listener,
        socket.create_connection(listener.getsockname()[:2]),
    ):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

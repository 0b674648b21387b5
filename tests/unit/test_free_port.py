"""free_port: a stack takes many ports from separate calls before it binds any, so no two may repeat."""

from __future__ import annotations

import socket
from contextlib import ExitStack

from reelforge.devstack.processes import free_port


def test_free_port_never_hands_out_a_port_twice_and_each_is_bindable() -> None:
    # Without the handed-out set this kernel repeated 137 of 2,000 consecutive picks (2026-12-06), and a
    # SeaweedFS whose volume and filer got the same port failed to start.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
    with ExitStack() as stack:  # the last picks (a component's set) can all be bound at once
        for port in ports[-8:]:
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)).bind(("127.0.0.1", port))

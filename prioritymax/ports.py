"""Whether a server can listen on a host and port: the check ``pmx up`` and ``pmx api`` make
before they start one, so a taken port is a clear message, not a server that dies on start."""

from __future__ import annotations

import errno
import socket

IN_USE = "is already in use"
#: Listening on a wildcard address, a service is reached on the loopback one.
WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def bind_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port now (None: it could). Binds as servers do, with
    SO_REUSEADDR, so a port in TIME_WAIT counts as free and one with a listener as taken. The port
    check of ``pmx up`` and ``pmx api``."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        return IN_USE if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
    return None

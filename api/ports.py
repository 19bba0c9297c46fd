"""Is a TCP port free to listen on? Checked before the service or the console starts, so a busy port is one line
naming the flag to change instead of a server that starts half-way (or a demo that drives someone else's)."""

from __future__ import annotations

import errno
import socket
from typing import NamedTuple

from api.mistakes import Mistake


class PortUnavailable(Mistake):
    """The port cannot be listened on; the message names the flag to change."""


class Problem(NamedTuple):
    """Why a port cannot be listened on, and whether the host (not the port) is what to change."""

    reason: str
    host_at_fault: bool = False


def port_problem(host: str, port: int) -> Problem | None:
    """Why ``host:port`` cannot be listened on now (``None`` when it can).

    Binds and closes a socket the way uvicorn binds (``SO_REUSEADDR``, IPv6 when the host has a ``:``), so a
    port only in TIME_WAIT counts as free, as it is for uvicorn. Someone may take the port between this check and
    the real bind; callers handle that failure too.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OverflowError:
        return Problem("is not a port number (0-65535)")
    except socket.gaierror as error:
        return Problem(f"cannot be listened on: unknown host ({error.strerror})", host_at_fault=True)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return Problem("is in use")
        if error.errno == errno.EACCES:
            return Problem("needs privileges to listen on")
        if error.errno == errno.EADDRNOTAVAIL:
            return Problem("cannot be listened on: the host is not an address of this machine", host_at_fault=True)
        return Problem(f"cannot be listened on ({error.strerror or error})")
    return None


def require_free(host: str, port: int, *, port_flag: str = "--port", host_flag: str = "--host") -> None:
    """Raise ``PortUnavailable`` naming ``port_flag`` (or ``host_flag`` when the host is at fault) unless
    ``host:port`` can be listened on now."""
    problem = port_problem(host, port)
    if problem is not None:
        flag = host_flag if problem.host_at_fault else port_flag
        raise PortUnavailable(f"port {port} on {host} {problem.reason}: pass {flag}")


def require_service_and_console_ports(host: str, port: int, console_port: int, *, console: bool) -> None:
    """``titrate demo``'s check before it starts anything: the service's port (``--port``) and, when ``console``,
    the console's (``--console-port``, which must differ) can be listened on at ``host``; ``PortUnavailable``
    naming the flag to change otherwise."""
    require_free(host, port, port_flag="--port")
    if not console:
        return
    if console_port == port:
        raise PortUnavailable(f"--console-port {console_port} is the service's --port: pass another --console-port")
    require_free(host, console_port, port_flag="--console-port")

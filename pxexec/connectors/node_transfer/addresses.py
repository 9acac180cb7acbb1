"""Which address a node server binds to by default: the one the engine's workers use."""

from __future__ import annotations

import fcntl
import os
import socket
import struct

__all__ = ["default_bind_address", "resolve_bind"]


def _route_source(address: str) -> str | None:
    """This host's address on the route to ``address`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((address, 9))
            source: str = s.getsockname()[0]
            return source
    except OSError:
        return None


def _host_of(url: str) -> str:
    return url.split("://")[-1].rpartition(":")[0].strip("[]")


def _interface_addresses() -> list[str]:
    found = []
    for _, name in socket.if_nameindex():
        address = _interface_address(name)  # SIOCGIFADDR
        if address is not None:
            found.append(address)
    return found


def default_bind_address() -> str:
    """The address a node server of this process listens on when none is configured.

    In order: ``PXEXEC_NODE_ADDRESS``; the host of this Dask worker's address; this
    host's address on the route to the Dask scheduler of the current client; the
    address of the host name; the first non-loopback interface; ``127.0.0.1``.

    >>> isinstance(default_bind_address(), str)
    True
    """
    configured = os.environ.get("PXEXEC_NODE_ADDRESS")
    if configured:
        return configured
    try:
        import distributed

        try:
            return _host_of(distributed.get_worker().address)
        except ValueError:
            pass
        try:
            client = distributed.default_client()  # type: ignore[no-untyped-call]
        except ValueError:
            client = None
        if client is not None and client.scheduler is not None:
            source = _route_source(_host_of(client.scheduler.address))
            if source:
                return source
    except ImportError:
        pass
    try:
        named = socket.gethostbyname(socket.gethostname())
        if not named.startswith("127."):
            return named
    except OSError:
        pass
    for address in _interface_addresses():
        if not address.startswith("127."):
            return address
    return "127.0.0.1"


def resolve_bind(bind: str | None) -> str:
    """The local address to listen on for a configured ``bind``.

    ``bind`` travels in the store config to every host, so it names a choice that makes
    sense on each: a network in CIDR form (``"10.1.0.0/16"``: this host's address in
    it), an interface name (``"ib0"``), or an address (used where it is local; other
    hosts use their default). None: ``default_bind_address()``.

    >>> resolve_bind("127.0.0.0/8")
    '127.0.0.1'
    >>> resolve_bind("lo")
    '127.0.0.1'
    """
    import ipaddress

    if not bind:
        return default_bind_address()
    if "/" in bind:
        network = ipaddress.ip_network(bind, strict=False)
        for address in _interface_addresses():
            if ipaddress.ip_address(address) in network:
                return address
        from pxexec.errors import ConfigError

        raise ConfigError(f"This host has no address in the transfer network {bind}: set "
                          "bind to a network every host has an address in.")
    try:
        ipaddress.ip_address(bind)
    except ValueError:  # an interface name
        named = _interface_address(bind)
        if named is None:
            from pxexec.errors import ConfigError

            raise ConfigError(f"This host has no IPv4 interface {bind!r} to bind the node "
                              "server to: set bind to an interface every host has.") from None
        return named
    return bind if bind in _interface_addresses() else default_bind_address()


def _interface_address(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])

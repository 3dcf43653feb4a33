"""The server-side request forgery guard of imports.

An import makes the platform's server connect where a user says. Without this guard a user
could make it read what only the server reaches: its own services on loopback, the private
network behind it, the cloud's metadata service at 169.254.169.254 (which hands out the
machine's credentials). So every address a host name resolves to is checked before
connecting, and fetchers connect to an address that was checked (not to the name again, which
a hostile DNS server could answer differently the second time: DNS rebinding) where their
client allows it. An administrator may allow private addresses for sources on the own network.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from suanli.data.archives import ImportFailed

DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "sftp": 22, "git": 9418}
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def check(url_or_host: str, port: int | None = None, allow_private: bool = False) -> list[str]:
    """The addresses `url_or_host` resolves to (IP text, in the resolver's order), or
    ImportFailed("error.import.refused_address") when one of them is not a public address
    and `allow_private` is False; ImportFailed("error.import.unknown_host") when the name
    does not resolve. `port` defaults to the URL's port, then its scheme's."""
    host, port = _host_and_port(url_or_host, port)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ImportFailed("error.import.unknown_host", host=host) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    if not allow_private:
        for address in addresses:
            if refused(address):
                raise ImportFailed("error.import.refused_address", host=host, address=address)
    return addresses


def refused(address: str) -> bool:
    """True unless `address` is a public unicast address. IPv6 forms that carry an IPv4
    address (::ffff:10.0.0.1, 6to4, Teredo) are judged by that address too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone is no part
    return any(_not_public(candidate) for candidate in _embedded(ip))


def _embedded(ip: Address) -> list[Address]:
    if not isinstance(ip, ipaddress.IPv6Address):
        return [ip]
    inner = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    return [ip, *(candidate for candidate in inner if candidate is not None)]


def _not_public(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # Python calls all of ::ffff:0:0/96 private: judge the IPv4 part
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_private
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def _host_and_port(url_or_host: str, port: int | None) -> tuple[str, int | None]:
    if "://" not in url_or_host:
        return url_or_host.removeprefix("[").removesuffix("]"), port
    parts = urlsplit(url_or_host)
    if not parts.hostname:
        raise ImportFailed("error.import.unknown_host", host=url_or_host[:300])
    try:
        url_port = parts.port
    except ValueError:
        raise ImportFailed("error.import.unknown_host", host=parts.hostname) from None
    return parts.hostname, port or url_port or DEFAULT_PORTS.get(parts.scheme.lower())

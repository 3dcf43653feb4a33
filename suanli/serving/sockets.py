"""Unix sockets of replicas, in folders their users own: connect only to what is a socket
there now, never through a link the user put in its place."""

import os
import stat


def is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False

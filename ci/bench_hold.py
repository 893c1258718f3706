#!/usr/bin/env python3
"""Opens connections to a server and holds them open, sending nothing.

    ci/bench_hold.py HOST PORT COUNT STATUS_FILE [MAX_WAIT_SECS]

Starts COUNT non-blocking connects at once, waits until they are
established, for at most MAX_WAIT_SECS (default 15) and no longer than a few
seconds without progress (a server that never accepts leaves the rest waiting
in SYN retries), then writes "established N" to STATUS_FILE and holds the
connections until SIGTERM or SIGINT. ci/bench.sh uses it for the idle and
held-open connection cases. The descriptor limit must allow COUNT sockets.
"""

import errno
import os
import selectors
import signal
import socket
import sys
import time

# SYN retries come 1, 2 and 4 s apart: a pause longer than this means no
# more connection is coming.
NO_PROGRESS_SECS = 4.5


def main():
    host, port, count, status_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    max_wait = float(sys.argv[5]) if len(sys.argv) > 5 else 15.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))

    selector = selectors.DefaultSelector()
    established = []
    for _ in range(count):
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.setblocking(False)
        code = connection.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            connection.close()
            continue
        selector.register(connection, selectors.EVENT_WRITE)

    started = last_progress = time.monotonic()
    while selector.get_map():
        now = time.monotonic()
        if now - started >= max_wait or now - last_progress >= NO_PROGRESS_SECS:
            break
        for key, _ in selector.select(timeout=0.2):
            connection = key.fileobj
            selector.unregister(connection)
            if connection.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                established.append(connection)
                last_progress = time.monotonic()
            else:
                connection.close()
    # Those still connecting would go on retrying; they are not held.
    for key in list(selector.get_map().values()):
        selector.unregister(key.fileobj)
        key.fileobj.close()

    with open(status_file + ".part", "w") as status:
        status.write(f"established {len(established)}\n")
    # Renamed into place so that a reader never sees half a line.
    os.replace(status_file + ".part", status_file)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()

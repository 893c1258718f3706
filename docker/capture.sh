#!/usr/bin/env bash
# Captures into a pcap file, packet by packet, and prints every packet live.
#
#   tcpfile-capture FILE [TCPDUMP ARGUMENT...]
#
# Debian's tcpdump gives up root once the capture is open, by default for the
# tcpdump user, and only then creates FILE (and, with -C or -G, each later
# file). In a directory bind-mounted from the host that user may create
# nothing. So tcpdump gives up root for the directory's owner instead: the host
# user who made captures/, or root when Docker made it. Needs the NET_RAW,
# SETUID and SETGID capabilities, and no others.
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: tcpfile-capture FILE [TCPDUMP ARGUMENT...]" >&2
    exit 1
fi
output=$1
shift

directory=$(dirname "$output")
owner=$(stat -c %u "$directory")
group=$(stat -c %g "$directory")
user=$(getent passwd "$owner" | cut -d: -f1 || true)
if [ -z "$user" ]; then
    user=capture
    echo "$user:x:$owner:$group:capture owner:/nonexistent:/usr/sbin/nologin" >> /etc/passwd
fi

# -p: this container's own traffic, as its applications see it, not what the
# bridge floods to every port. -U: each packet reaches the file when it is
# captured, so the file is readable while the capture runs. -l: the printed
# lines reach the container's log as they come. -B: a 32 MiB kernel buffer;
# a transfer bursts megabytes in a few milliseconds, faster than tcpdump
# prints, and the default 2 MiB overflows and drops packets.
exec tcpdump -Z "$user" -p -nn -U -l --print -B 32768 -w "$output" "$@"

#!/usr/bin/env bash
# Reads tcpfile conversations back from pcap files: one line per connection
# with the file asked for, the size of each protocol message, the status, the
# client's reply, the content bytes that crossed and which side closed.
#
#   tcpfile-flows.sh [-p PORT] [-s SINCE] [-m] FILE...
#
# PORT is the server's port (7070 by default). SINCE, in seconds since the
# epoch, leaves out connections opened before it. -m prints, instead of the
# connections, most_at_once=N: the most transfers that were in progress at one
# time, each from its response to the server's FIN; an iterative server never
# has more than one. Several FILEs are read as one
# capture, in the order of their numbers: the parts of a capture that tcpdump
# rotated with -C, such as server.pcap server.pcap1 ... server.pcap10.
#
# Output, one line per connection in the order they started:
#   client=172.20.0.5:41234 file=random.bin request=260 response=16 status=0
#   size=5247201 reply=3 content=5247201 retransmitted=0 server_fin=yes
#   client_fin=yes opened=<time> answered=<time> server_closed=<time>
# request and response are the payload sizes of the first segments that
# carried them (0 when none was seen); status and size are decoded from the
# response; reply is the value of the client's 1-byte reply (3 READY, 4 REFUSE,
# - when it sent none). content is the bytes the server sent after the
# response, summed over segments, since segmentation offload merges and splits
# them freely; bytes sent again are counted once, and in retransmitted.
set -euo pipefail

usage="usage: $0 [-p PORT] [-s SINCE] [-m] FILE..."
port=7070
since=0
most_at_once=false
while getopts p:s:m option; do
    case "$option" in
        p) port=$OPTARG ;;
        s) since=$OPTARG ;;
        m) most_at_once=true ;;
        *) echo "$usage" >&2; exit 1 ;;
    esac
done
shift $((OPTIND - 1))
if [ "$#" -eq 0 ]; then
    echo "$usage" >&2
    exit 1
fi

connections() {
    printf '%s\n' "$@" | sort -V | while read -r capture; do
        if ! tcpdump -r "$capture" -nn -tt -S -x "tcp port $port" 2>/dev/null; then
            echo "error: tcpdump cannot read all of $capture" >&2
            exit 1
        fi
    done | LC_ALL=C awk -v port="$port" -v since="$since" '
    BEGIN {
        for (i = 0; i < 16; i++) hexval[substr("0123456789abcdef", i + 1, 1)] = i
        # Only the protocol messages are decoded; content segments are never
        # smaller than this without being the tail of a transfer.
        decode_limit = 260
    }

    function byte_at(i) {
        return hexval[substr(hex, 2 * i + 1, 1)] * 16 + hexval[substr(hex, 2 * i + 2, 1)]
    }

    function endpoint_port(endpoint) {
        sub(/:$/, "", endpoint)
        return substr(endpoint, match(endpoint, /[0-9]+$/))
    }

    function as_address(endpoint) {
        sub(/:$/, "", endpoint)
        return substr(endpoint, 1, match(endpoint, /\.[0-9]+$/) - 1) ":" endpoint_port(endpoint)
    }

    # Sequence numbers wrap around at 2^32.
    function seq_offset(seq, origin,   offset) {
        offset = (seq - origin) % 4294967296
        return offset < 0 ? offset + 4294967296 : offset
    }

    function new_flow(key) {
        if (key in opened) return
        order[++flows] = key
        opened[key] = time
        file[key] = "-"
        request[key] = 0; response[key] = 0; status[key] = "-"; size[key] = "-"
        reply[key] = "-"; replies[key] = 0; content[key] = 0; retransmitted[key] = 0
        server_fin[key] = "no"; client_fin[key] = "no"
        answered[key] = "-"; server_closed[key] = "-"
    }

    # Decodes the payload of the packet just read, when it is a protocol message.
    function finish_packet(   payload, name_length, i, value) {
        if (key == "" || !collecting) return
        payload = (byte_at(0) % 16) * 4
        payload += int(byte_at(payload + 12) / 16) * 4
        if (to_server && request[key] == 0) {
            request[key] = bytes
            name_length = byte_at(payload + 2) + 256 * byte_at(payload + 3)
            if (name_length > 256) name_length = 256
            file[key] = ""
            for (i = 0; i < name_length; i++) file[key] = file[key] sprintf("%c", byte_at(payload + 4 + i))
        } else if (to_server && replies[key] == 0) {
            replies[key] = bytes
            reply[key] = byte_at(payload)
        } else if (!to_server && response[key] == 0) {
            response[key] = bytes
            answered[key] = time
            status[key] = byte_at(payload + 2)
            value = 0
            for (i = 7; i >= 0; i--) value = value * 256 + byte_at(payload + 8 + i)
            size[key] = sprintf("%.0f", value)
        }
    }

    /^[0-9]+\.[0-9]+ IP / {
        finish_packet()
        key = ""; hex = ""; bytes = 0; collecting = 0
        time = $1
        if (endpoint_port($5) == port) { to_server = 1; key = as_address($3) }
        else if (endpoint_port($3) == port) { to_server = 0; key = as_address($5) }
        else next
        new_flow(key)
        flags = ""; first_seq = ""; last_seq = ""
        for (i = 6; i <= NF; i++) {
            if ($i == "Flags") flags = $(i + 1)
            if ($i == "seq") { split($(i + 1), range, /[:,]/); first_seq = range[1]; last_seq = range[2] }
            if ($i == "length") { bytes = $(i + 1) + 0; break }
        }
        if (flags ~ /F/) {
            if (to_server) client_fin[key] = "yes"
            else { server_fin[key] = "yes"; server_closed[key] = time }
        }
        if (bytes == 0 || last_seq == "") next
        # Only bytes not seen before count: a retransmitted segment is counted
        # once, and never decoded as the next message.
        side = key SUBSEP to_server
        if (!(side in origin)) { origin[side] = first_seq; reached[side] = 0 }
        start = seq_offset(first_seq, origin[side])
        end = seq_offset(last_seq, origin[side])
        fresh = end - (start > reached[side] ? start : reached[side])
        if (fresh <= 0) { retransmitted[key] += bytes; next }
        retransmitted[key] += bytes - fresh
        reached[side] = end
        if (!to_server && response[key] > 0) content[key] += fresh
        collecting = bytes <= decode_limit
        next
    }

    /^\t0x/ {
        if (collecting) for (i = 2; i <= NF; i++) hex = hex $i
    }

    END {
        finish_packet()
        for (n = 1; n <= flows; n++) {
            k = order[n]
            if (opened[k] < since) continue
            printf "client=%s file=%s request=%d response=%d status=%s size=%s reply=%s content=%.0f retransmitted=%.0f server_fin=%s client_fin=%s opened=%s answered=%s server_closed=%s\n",
                k, file[k], request[k], response[k], status[k], size[k], reply[k], content[k], retransmitted[k],
                server_fin[k], client_fin[k], opened[k], answered[k], server_closed[k]
        }
    }
    '
}

# Each transfer adds one at its response and takes one away at the server's
# FIN; at equal times the FIN comes first, so back-to-back is not overlap.
count_most_at_once() {
    LC_ALL=C awk '{
        for (i = 1; i <= NF; i++) { split($i, pair, "="); field[pair[1]] = pair[2] }
        if (field["answered"] != "-" && field["server_closed"] != "-") {
            print field["answered"], 1
            print field["server_closed"], -1
        }
    }' | sort -k1,1n -k2,2n | awk '{ now += $2; if (now > most) most = now } END { print "most_at_once=" most + 0 }'
}

if $most_at_once; then
    connections "$@" | count_most_at_once
else
    connections "$@"
fi

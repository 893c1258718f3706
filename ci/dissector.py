#!/usr/bin/env python3
"""Hand-made tcpfile peers and the capture check, for ci/dissector.sh.

  dissector.py client PORT NAME [--version N] [--type N] [--name-length N]
                       [--reply N] [--split] [--reply-with-request] [--address A]
      Sends a request built from its options (the name fills the 256-byte
      field, cut or padded), replies when the status is OK, reads until the
      server closes, and prints what it sent and got as an expectation line.
      --split sends the request one byte per segment (TCP_NODELAY);
      --reply-with-request sends the reply in the request's (last) segment.

  dissector.py server
      A server that breaks the protocol: prints its port, then answers each
      name of BROKEN_ANSWERS as listed there, one connection after another,
      until it is killed.

  dissector.py check --lua FILE [--decode-as PORT]... EXPECTATIONS CAPTURE
      Decodes CAPTURE with tshark and the dissector (on 7070 and, through
      -d, on each PORT) and compares each connection with EXPECTATIONS (a
      file, or - for stdin). Prints one line per connection; exits 1 when
      anything differs.

An expectation is one line of key=value words (shell quoting), the first
being name=NAME, the file name the request carries:

  name=random.bin status=OK size=5247201 reply=READY_TO_RECEIVE content=5247201

Keys: count (connections asking for NAME, default 1), version, type,
name_length, status, size, reply, content (the last content total, 0 when
none), client_segments (client-to-server segments with new data), experts (the
dissector's expert infos, comma-separated, or none: the default). status,
type and reply are compared with the names the dissector shows, or the
number for a value the protocol does not define; - means no such message.
A connection that matches no line must show no expert info.
"""

import argparse
import shlex
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

REQUEST_LEN = 260
RESPONSE_LEN = 16
NAME_FIELD_LEN = 256
STATUS_OK = 0
READY_TO_RECEIVE = 3
TIMEOUT_SECS = 10

# The contract's names, for the lines the client prints.
MESSAGE_TYPES = {1: "FILE_REQUEST", 2: "FILE_RESPONSE"}
STATUSES = {
    0: "OK",
    1: "PROTOCOL_MISMATCH",
    2: "INVALID_FILENAME",
    3: "FILE_NOT_FOUND",
    4: "ACCESS_DENIED",
    5: "INTERNAL_ERROR",
    6: "BAD_REQUEST",
}
REPLIES = {3: "READY_TO_RECEIVE", 4: "REFUSE_TO_RECEIVE"}

# name -> (status, announced size, content bytes sent after READY)
BROKEN_ANSWERS = {
    "status-9.txt": (9, 0, 0),
    "too-much.txt": (STATUS_OK, 10, 25),
}

# Dissector fields whose number is the summary's value, and its key.
NUMBER_FIELDS = {
    "tcpfile.request.version": "version",
    "tcpfile.request.name_length": "name_length",
    "tcpfile.response.file_size": "size",
}

# Dissector fields whose value string's name is the summary's value.
NAMED_FIELDS = {
    "tcpfile.request.type": "type",
    "tcpfile.response.status": "status",
    "tcpfile.reply": "reply",
}

EXPECTATION_KEYS = {
    "count", "version", "type", "name_length", "status", "size", "reply",
    "content", "client_segments", "experts",
}


def named(names, value):
    return names.get(value, str(value))


def read_until_closed(connection, limit=None):
    """Bytes until the peer closes, or until limit bytes."""
    data = bytearray()
    while limit is None or len(data) < limit:
        chunk = connection.recv(65536 if limit is None else limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def run_client(args):
    name = args.name.encode("ascii")
    name_length = len(name) if args.name_length is None else args.name_length
    field = name.ljust(NAME_FIELD_LEN, b"\0")[:NAME_FIELD_LEN]
    request = bytes([args.version, args.type]) + name_length.to_bytes(2, "little") + field
    reply = bytes([args.reply])

    with socket.create_connection((args.address, args.port), timeout=TIMEOUT_SECS) as connection:
        pieces = [bytes([byte]) for byte in request] if args.split else [request]
        if args.reply_with_request:
            pieces[-1] += reply
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            connection.sendall(piece)
            if args.split:
                # Each piece leaves in a segment of its own.
                time.sleep(0.002)
        response = read_until_closed(connection, RESPONSE_LEN)
        if len(response) < RESPONSE_LEN:
            sys.exit(f"the server closed after {len(response)} bytes of the response")
        status = response[2]
        size = int.from_bytes(response[8:16], "little")
        replied = args.reply_with_request
        if status == STATUS_OK and not replied:
            connection.sendall(reply)
            replied = True
        content = read_until_closed(connection)

    shown_name = field[:min(name_length, NAME_FIELD_LEN)].decode("ascii")
    print(shlex.join([
        f"name={shown_name}",
        f"version={args.version}",
        f"type={named(MESSAGE_TYPES, args.type)}",
        f"name_length={name_length}",
        f"status={named(STATUSES, status)}",
        f"size={size}",
        f"reply={named(REPLIES, args.reply) if replied else '-'}",
        f"content={len(content)}",
    ]))


def run_broken_server(_args):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(listener.getsockname()[1], flush=True)
        while True:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(TIMEOUT_SECS)
                request = read_until_closed(connection, REQUEST_LEN)
                name_length = int.from_bytes(request[2:4], "little")
                name = request[4:4 + name_length].decode("ascii", "replace")
                status, size, sent = BROKEN_ANSWERS.get(name, (3, 0, 0))
                connection.sendall(bytes([1, 2, status, 0, 0, 0, 0, 0]) + size.to_bytes(8, "little"))
                if status == STATUS_OK and connection.recv(1) == bytes([READY_TO_RECEIVE]):
                    connection.sendall(b"c" * sent)


def tshark(capture, lua, decode_as, display_filter, output):
    command = ["tshark", "-n", "-r", capture, "-X", f"lua_script:{lua}", "-Y", display_filter]
    for port in decode_as:
        command += ["-d", f"tcp.port=={port},tcpfile"]
    command += output
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        sys.exit(f"tshark failed ({finished.returncode}): {shlex.join(command)}\n{finished.stderr}")
    return finished.stdout


def shown_value(field):
    """The name a value string gives a number, or the number."""
    label = field.get("showname", "").split(": ", 1)[-1]
    if label.endswith(")") and not label.startswith("Unknown"):
        return label.rsplit(" (", 1)[0]
    return field.get("show")


def connections_in(capture, lua, decode_as):
    """A summary of each TCP connection that carried tcpfile data, and the
    Lua errors the dissector raised."""
    server_ports = {"7070"} | set(decode_as)
    segments = {}
    stream_of_frame = {}
    lua_errors = []
    columns = ["frame.number", "tcp.stream", "ip.src", "ipv6.src", "tcp.srcport",
               "ip.dst", "ipv6.dst", "tcp.dstport", "tcp.seq", "tcp.len", "_ws.expert.message"]
    output = tshark(capture, lua, decode_as, "tcp",
                    ["-T", "fields", "-E", "separator=/t"] + [f for column in columns for f in ("-e", column)])
    for line in output.splitlines():
        number, stream, ip_src, ip6_src, src_port, ip_dst, ip6_dst, dst_port, seq, length, experts = \
            line.split("\t")
        if "Lua Error" in experts:
            lua_errors.append(f"frame {number}: {experts}")
        to_server = dst_port in server_ports
        client = f"{ip_src or ip6_src}:{src_port}" if to_server else f"{ip_dst or ip6_dst}:{dst_port}"
        stream_of_frame[number] = stream
        client_segments = segments.setdefault(stream, {"client": client, "starts": set()})
        # A segment sent again (a tail loss probe, say) has the same start.
        if to_server and int(length or 0) > 0:
            client_segments["starts"].add(seq)

    summaries = {}
    pdml = tshark(capture, lua, decode_as, "tcpfile", ["-T", "pdml", "-J", "tcpfile"])
    for packet in ElementTree.fromstring(pdml).iter("packet"):
        number = packet.find("proto[@name='geninfo']/field[@name='num']").get("show")
        stream = stream_of_frame[number]
        summary = summaries.setdefault(stream, {
            "client": segments[stream]["client"], "name": "-", "version": "-", "type": "-",
            "name_length": "-", "status": "-", "size": "-", "reply": "-", "content": "0",
            "client_segments": len(segments[stream]["starts"]), "experts": set(),
        })
        for field in packet.iter("field"):
            name = field.get("name", "")
            if name == "tcpfile.request.name":
                summary["name"] = field.get("show")
            elif name in NUMBER_FIELDS:
                summary[NUMBER_FIELDS[name]] = field.get("show")
            elif name in NAMED_FIELDS:
                summary[NAMED_FIELDS[name]] = shown_value(field)
            elif name == "tcpfile.content.total":
                summary["content"] = str(max(int(summary["content"]), int(field.get("show"))))
            elif name == "_ws.expert":
                summary["experts"] |= {child.get("name").removeprefix("tcpfile.") for child in field
                                       if child.get("name", "").startswith("tcpfile.")}
    return [summaries[stream] for stream in sorted(summaries, key=int)], lua_errors


def describe(summary):
    experts = ",".join(sorted(summary["experts"])) or "none"
    return (f"client={summary['client']} name={shlex.quote(summary['name'])} version={summary['version']} "
            f"type={summary['type']} name_length={summary['name_length']} status={summary['status']} "
            f"size={summary['size']} reply={summary['reply']} content={summary['content']} "
            f"client_segments={summary['client_segments']} experts={experts}")


def parse_expectations(text):
    expectations = []
    for number, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        pairs = dict(word.split("=", 1) for word in words if "=" in word)
        if not words[0].startswith("name=") or len(pairs) != len(words) or not set(pairs) - {"name"} <= EXPECTATION_KEYS:
            sys.exit(f"expectations, line {number}: not name=NAME followed by known key=value words: {line}")
        pairs.setdefault("experts", "none")
        expectations.append(pairs)
    return expectations


def run_check(args):
    text = sys.stdin.read() if args.expectations == "-" else open(args.expectations, encoding="utf-8").read()
    expectations = parse_expectations(text)
    summaries, failures = connections_in(args.capture, args.lua, args.decode_as)
    for summary in summaries:
        print("  " + describe(summary))

    expected_names = set()
    for expectation in expectations:
        name = expectation["name"]
        expected_names.add(name)
        matching = [summary for summary in summaries if summary["name"] == name]
        count = int(expectation.get("count", "1"))
        if len(matching) != count:
            failures.append(f"{len(matching)} connections asked for {name!r}, not {count}")
            continue
        for summary in matching:
            for key, wanted in expectation.items():
                if key in ("name", "count"):
                    continue
                if key == "experts":
                    seen = ",".join(sorted(summary["experts"])) or "none"
                    wanted = ",".join(sorted(wanted.split(",")))
                else:
                    seen = str(summary[key])
                if seen != wanted:
                    failures.append(f"{summary['client']} ({name!r}): {key}={seen}, expected {wanted}")
    for summary in summaries:
        if summary["name"] not in expected_names and summary["experts"]:
            failures.append(f"{summary['client']} ({summary['name']!r}), which no line expects, shows "
                            f"{','.join(sorted(summary['experts']))}")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print(f"{len(summaries)} connections decoded, {len(expectations)} expectations, {len(failures)} failures")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    client = commands.add_parser("client")
    client.add_argument("port", type=int)
    client.add_argument("name")
    client.add_argument("--address", default="127.0.0.1")
    client.add_argument("--version", type=int, default=1)
    client.add_argument("--type", type=int, default=1)
    client.add_argument("--name-length", type=int)
    client.add_argument("--reply", type=int, default=READY_TO_RECEIVE)
    client.add_argument("--split", action="store_true")
    client.add_argument("--reply-with-request", action="store_true")
    commands.add_parser("server")
    check = commands.add_parser("check")
    check.add_argument("--lua", required=True)
    check.add_argument("--decode-as", action="append", default=[])
    check.add_argument("expectations")
    check.add_argument("capture")
    args = parser.parse_args()
    if args.command == "client":
        run_client(args)
    elif args.command == "server":
        run_broken_server(args)
    else:
        sys.exit(run_check(args))


if __name__ == "__main__":
    main()

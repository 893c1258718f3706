-- A Wireshark dissector for the tcpfile protocol, version 1 (docs/PROTOCOL.md).
--
--   tshark -X lua_script:docker/tcpfile.lua -r capture.pcap
--   tshark -X lua_script:docker/tcpfile.lua -d tcp.port==12345,tcpfile -r capture.pcap
--   cp docker/tcpfile.lua ~/.local/lib/wireshark/plugins/    (Wireshark itself)
--
-- Registered on TCP port 7070; "Decode As" (or -d) puts it on any other port.
--
-- The messages carry no type that tells them apart: what a byte is follows
-- from where it is in its direction of the connection. From the client, bytes
-- 0-259 are the request, byte 260 the reply, anything after that is a
-- violation; from the server, bytes 0-15 are the response and every later
-- byte is content. So each piece of data is placed by its TCP sequence
-- numbers (relative ones, Wireshark's default; the capture must hold the
-- start of the connection's data), which also count content that a short snap
-- length left out of the capture, and count a retransmitted segment only
-- once. A request or response split across segments is reassembled with
-- pinfo.desegment_len; several messages in one segment are dissected one
-- after the other.

local tcpfile = Proto("tcpfile", "tcpfile File Transfer Protocol")

local PORT = 7070
local VERSION = 1
local REQUEST_LEN = 260
local RESPONSE_LEN = 16
local REPLY_LEN = 1
local NAME_FIELD_LEN = 256
local MAX_NAME_LEN = 255
local FILE_REQUEST = 1
local FILE_RESPONSE = 2
local READY_TO_RECEIVE = 3
local STATUS_OK = 0

local message_types = { [FILE_REQUEST] = "FILE_REQUEST", [FILE_RESPONSE] = "FILE_RESPONSE" }
local statuses = {
    [0] = "OK",
    [1] = "PROTOCOL_MISMATCH",
    [2] = "INVALID_FILENAME",
    [3] = "FILE_NOT_FOUND",
    [4] = "ACCESS_DENIED",
    [5] = "INTERNAL_ERROR",
    [6] = "BAD_REQUEST",
}
local replies = { [3] = "READY_TO_RECEIVE", [4] = "REFUSE_TO_RECEIVE" }

local fields = {
    request = ProtoField.none("tcpfile.request", "Request"),
    request_version = ProtoField.uint8("tcpfile.request.version", "Protocol version"),
    request_type = ProtoField.uint8("tcpfile.request.type", "Message type", base.DEC, message_types),
    name_length = ProtoField.uint16("tcpfile.request.name_length", "Name length"),
    name = ProtoField.string("tcpfile.request.name", "File name"),
    response = ProtoField.none("tcpfile.response", "Response"),
    response_version = ProtoField.uint8("tcpfile.response.version", "Protocol version"),
    response_type = ProtoField.uint8("tcpfile.response.type", "Message type", base.DEC, message_types),
    status = ProtoField.uint8("tcpfile.response.status", "Status", base.DEC, statuses),
    padding = ProtoField.bytes("tcpfile.response.padding", "Padding"),
    file_size = ProtoField.uint64("tcpfile.response.file_size", "File size"),
    reply = ProtoField.uint8("tcpfile.reply", "Reply", base.DEC, replies),
    content = ProtoField.none("tcpfile.content", "Content"),
    content_length = ProtoField.uint32("tcpfile.content.length", "Bytes in this segment"),
    content_total = ProtoField.uint64("tcpfile.content.total", "Bytes so far"),
    unexpected = ProtoField.none("tcpfile.unexpected", "Unexpected data"),
    partial = ProtoField.none("tcpfile.partial", "Part of a message"),
}
tcpfile.fields = fields

-- Errors: a message no implementation may send.
local function malformed(abbreviation, text)
    return ProtoExpert.new(abbreviation, text, expert.group.MALFORMED, expert.severity.ERROR)
end

local function violation(abbreviation, text)
    return ProtoExpert.new(abbreviation, text, expert.group.PROTOCOL, expert.severity.ERROR)
end

local experts = {
    bad_name_length = malformed("tcpfile.bad_name_length", "Name length out of range"),
    unknown_type = malformed("tcpfile.unknown_type", "Unknown message type"),
    unknown_status = malformed("tcpfile.unknown_status", "Unknown status"),
    unknown_reply = malformed("tcpfile.unknown_reply", "Unknown reply"),
    content_beyond_size = violation("tcpfile.content_beyond_size", "More content than announced"),
    unrequested_content = violation("tcpfile.unrequested_content", "Content the client did not ask for"),
    unexpected_data = violation("tcpfile.unexpected_data", "Data after the client's reply"),
    -- Warnings: a message the protocol allows, which the peer answers with
    -- an error status or cannot use.
    version_mismatch = ProtoExpert.new("tcpfile.version_mismatch", "Protocol version is not 1",
        expert.group.PROTOCOL, expert.severity.WARN),
    invalid_name = ProtoExpert.new("tcpfile.invalid_name", "File name breaks the name rules",
        expert.group.PROTOCOL, expert.severity.WARN),
    size_on_error = ProtoExpert.new("tcpfile.size_on_error", "File size with a status other than OK",
        expert.group.PROTOCOL, expert.severity.WARN),
    incomplete = ProtoExpert.new("tcpfile.incomplete", "Message not reassembled",
        expert.group.REASSEMBLE, expert.severity.WARN),
    absolute_sequence_numbers = ProtoExpert.new("tcpfile.absolute_sequence_numbers",
        "Not decoded: TCP relative sequence numbers are off (tcp.relative_sequence_numbers)",
        expert.group.UNDECODED, expert.severity.WARN),
}
tcpfile.experts = experts

local tcp_stream = Field.new("tcp.stream")
local tcp_seq = Field.new("tcp.seq")
local tcp_seq_raw = Field.new("tcp.seq_raw")
local tcp_len = Field.new("tcp.len")

-- What one message of a connection told about the others, by tcp.stream.
local connections = {}
-- The frame and Info text this dissector last set, so that a second call for
-- that frame (the data after a reassembled message) appends to it.
local info_frame, info_text

function tcpfile.init()
    connections = {}
    info_frame, info_text = nil, nil
end

-- The innermost TCP header's value of a field (tunnels can carry several).
local function innermost(field)
    local values = { field() }
    local last = values[#values]
    return last and last.value
end

local function connection_of(pinfo)
    local stream = innermost(tcp_stream)
    local connection = connections[stream]
    if not connection then
        -- The port the dissector table matched is the server's, for the
        -- registered port and for "Decode As" alike.
        connection = { server_port = pinfo.match_uint }
        connections[stream] = connection
    end
    return connection
end

local function add_info(pinfo, text)
    if info_frame == pinfo.number and info_text == tostring(pinfo.cols.info) then
        pinfo.cols.info:append(", " .. text)
    else
        pinfo.cols.info:set(text)
    end
    info_frame, info_text = pinfo.number, tostring(pinfo.cols.info)
end

-- Why a name the length field designates breaks the rules, or nil.
local function name_problem(name)
    if name == "." or name == ".." then
        return "it is " .. name
    end
    local slash = name:find("/", 1, true)
    if slash then
        return "it contains '/' at byte " .. (slash - 1)
    end
    local control = name:find("[^\32-\126]")
    if control then
        return string.format("byte %d is 0x%02x, not printable ASCII", control - 1, name:byte(control))
    end
    return nil
end

-- A name as it can be shown in one line: in quotes, any byte that is not
-- printable ASCII as \xNN.
local function quoted(name)
    return '"' .. name:gsub("[^\32-\126]", function(byte)
        return string.format("\\x%02x", byte:byte())
    end) .. '"'
end

local function dissect_request(range, pinfo, tree)
    local item = tree:add(fields.request, range)
    local version = range(0, 1):uint()
    local version_item = item:add(fields.request_version, range(0, 1))
    if version ~= VERSION then
        version_item:add_proto_expert_info(experts.version_mismatch,
            "Protocol version " .. version .. "; the server answers PROTOCOL_MISMATCH")
    end
    local message_type = range(1, 1):uint()
    local type_item = item:add(fields.request_type, range(1, 1))
    if message_type ~= FILE_REQUEST then
        type_item:add_proto_expert_info(experts.unknown_type,
            "Message type " .. message_type .. " is not FILE_REQUEST (1)")
    end
    local name_length = range(2, 2):le_uint()
    local length_item = item:add_le(fields.name_length, range(2, 2))
    local name_range = range(4, math.min(name_length, NAME_FIELD_LEN))
    local name = name_range:string()
    item:add(fields.name, name_range, name)
    local summary = quoted(name)
    if name_length == 0 or name_length > MAX_NAME_LEN then
        length_item:add_proto_expert_info(experts.bad_name_length,
            "Name length " .. name_length .. ": must be 1 to " .. MAX_NAME_LEN)
        summary = "with name length " .. name_length
    else
        local problem = name_problem(name)
        if problem then
            item:add_proto_expert_info(experts.invalid_name, "Invalid file name: " .. problem)
        end
    end
    item:append_text(" " .. summary)
    add_info(pinfo, "Request " .. summary)
end

local function dissect_response(range, pinfo, tree, connection)
    local item = tree:add(fields.response, range)
    local version = range(0, 1):uint()
    local version_item = item:add(fields.response_version, range(0, 1))
    if version ~= VERSION then
        version_item:add_proto_expert_info(experts.version_mismatch, "Protocol version " .. version)
    end
    local message_type = range(1, 1):uint()
    local type_item = item:add(fields.response_type, range(1, 1))
    if message_type ~= FILE_RESPONSE then
        type_item:add_proto_expert_info(experts.unknown_type,
            "Message type " .. message_type .. " is not FILE_RESPONSE (2)")
    end
    local status = range(2, 1):uint()
    local status_item = item:add(fields.status, range(2, 1))
    local status_name = statuses[status] or tostring(status)
    if not statuses[status] then
        status_item:add_proto_expert_info(experts.unknown_status, "Status " .. status .. " is not in the protocol")
    end
    item:add(fields.padding, range(3, 5))
    local size = range(8, 8):le_uint64():tonumber()
    local size_item = item:add_le(fields.file_size, range(8, 8))
    if status ~= STATUS_OK and size ~= 0 then
        size_item:add_proto_expert_info(experts.size_on_error)
    end
    item:append_text(string.format(": %s, %.0f bytes", status_name, size))
    connection.status = status
    connection.size = size
    add_info(pinfo, string.format("Response %s, %.0f bytes", status_name, size))
end

local function dissect_reply(range, pinfo, tree, connection)
    local reply = range:uint()
    local item = tree:add(fields.reply, range)
    if not replies[reply] then
        item:add_proto_expert_info(experts.unknown_reply,
            "Reply " .. reply .. " is neither READY_TO_RECEIVE (3) nor REFUSE_TO_RECEIVE (4)")
    end
    connection.reply = reply
    add_info(pinfo, "Reply " .. (replies[reply] or tostring(reply)))
end

-- The content: from where it has reached (bytes after the response) to the
-- end of the tvb, of which only the captured part can be shown.
local function dissect_content(tvb, offset, reached, pinfo, tree, connection)
    local length = tvb:reported_length_remaining(offset)
    local total = reached + length
    local item = tree:add(fields.content, tvb(offset, tvb:captured_len() - offset))
    item:add(fields.content_length, tvb(offset, 0), length):set_generated()
    item:add(fields.content_total, tvb(offset, 0), UInt64(total)):set_generated()
    local of_size = ""
    if connection.size then
        of_size = string.format(" of %.0f", connection.size)
        if total > connection.size then
            item:add_proto_expert_info(experts.content_beyond_size,
                string.format("%.0f bytes of content, %.0f announced", total, connection.size))
        end
    end
    if connection.status ~= STATUS_OK or connection.reply ~= READY_TO_RECEIVE then
        item:add_proto_expert_info(experts.unrequested_content)
    end
    item:append_text(string.format(": %d bytes, %.0f%s so far", length, total, of_size))
    add_info(pinfo, string.format("Content %d bytes, %.0f%s", length, total, of_size))
end

local function dissect_unexpected(tvb, offset, _, pinfo, tree)
    local length = tvb:reported_length_remaining(offset)
    local item = tree:add(fields.unexpected, tvb(offset, tvb:captured_len() - offset))
    item:add_proto_expert_info(experts.unexpected_data,
        string.format("%d bytes after the reply, which ends what the client may send", length))
    add_info(pinfo, "Unexpected data")
end

-- What each direction carries, in order: fixed-size messages, then a part
-- that runs to the end of the connection.
local from_client = {
    { label = "request", length = REQUEST_LEN, dissect = dissect_request },
    { label = "reply", length = REPLY_LEN, dissect = dissect_reply },
    { label = "unexpected data", dissect = dissect_unexpected },
}
local from_server = {
    { label = "response", length = RESPONSE_LEN, dissect = dissect_response },
    { label = "content", dissect = dissect_content },
}

-- The part at position of a direction's layout, and where it starts.
local function part_at(layout, position)
    local start = 0
    for _, part in ipairs(layout) do
        if not part.length or position < start + part.length then
            return part, start
        end
        start = start + part.length
    end
end

-- A piece of a message that cannot be reassembled: split while reassembly is
-- off, or cut short by the capture's snap length.
local function dissect_piece(tvb, offset, taken, from, part, pinfo, tree)
    local captured = math.max(0, math.min(taken, tvb:captured_len() - offset))
    local item = tree:add(fields.partial, tvb(offset, captured))
    item:append_text(string.format(": bytes %d to %d of the %d-byte %s",
        from, from + taken - 1, part.length, part.label))
    local why = "TCP reassembly is off or impossible here"
    if taken == part.length then
        why = "the packet was cut short by the capture"
    end
    item:add_proto_expert_info(experts.incomplete, string.format("Part of a %s: %s", part.label, why))
    add_info(pinfo, "Part of a " .. part.label)
end

function tcpfile.dissector(tvb, pinfo, tree)
    local seq = innermost(tcp_seq)
    local segment_length = innermost(tcp_len)
    if not seq or not segment_length or segment_length == 0 then
        return 0
    end
    pinfo.cols.protocol = "TCPFILE"
    local connection = connection_of(pinfo)
    local layout = from_server
    if pinfo.dst_port == connection.server_port then
        layout = from_client
    end
    local subtree
    if seq == innermost(tcp_seq_raw) then
        subtree = tree:add(tcpfile, tvb())
        subtree:add_proto_expert_info(experts.absolute_sequence_numbers)
        return
    end

    -- Where the tvb starts in its direction. A reassembled tvb (one that is
    -- no part of a frame) is always a message starting at the first byte,
    -- since only the request and the response are ever reassembled; any other
    -- tvb reaches the end of the segment.
    local tvb_start = 0
    if tvb:offset() > 0 then
        tvb_start = seq - 1 + segment_length - tvb:reported_len()
    end

    local offset = 0
    while offset < tvb:reported_len() do
        local position = tvb_start + offset
        local part, part_start = part_at(layout, position)
        local available = tvb:reported_length_remaining(offset)
        if not part.length then
            subtree = subtree or tree:add(tcpfile, tvb())
            part.dissect(tvb, offset, position - part_start, pinfo, subtree, connection)
            return
        end
        local wanted = part_start + part.length - position
        if position == part_start and available < wanted and pinfo.can_desegment > 0 then
            pinfo.desegment_offset = offset
            pinfo.desegment_len = wanted - available
            return
        end
        subtree = subtree or tree:add(tcpfile, tvb())
        local taken = math.min(wanted, available)
        if taken == part.length and tvb:captured_len() - offset >= taken then
            part.dissect(tvb(offset, taken), pinfo, subtree, connection)
        else
            dissect_piece(tvb, offset, taken, position - part_start, part, pinfo, subtree)
        end
        offset = offset + taken
    end
end

DissectorTable.get("tcp.port"):add(PORT, tcpfile)

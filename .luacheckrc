-- luacheck settings for the Wireshark dissector (ci/lint.sh runs luacheck).
-- Wireshark 4.0 embeds Lua 5.2 and gives scripts its API as globals.
std = "lua52"
read_globals = {
    "base", "DissectorTable", "expert", "Field", "Proto", "ProtoExpert", "ProtoField", "UInt64",
}

-- Merge data fields into a live session (field by field) and touch it.
-- KEYS[1]: the session hash '<base>:s:<sha256 of the token>'
-- ARGV[1]: idle ttl ms; ARGV[2]: cap on the merged data, bytes; ARGV[3]: n, pairs to set
-- ARGV[4 .. 3+2n]: field name, JSON text of its value, ...; ARGV[4+2n ..]: fields to remove
-- Returns: nil when there is no live session; {-1, merged size} when the merged data would be
-- over the cap (nothing is written); else {last seen ms, absolute deadline ms,
-- created ms, meta JSON, data JSON}
local f = redis.call('HMGET', KEYS[1], 'l', 'a', 'c', 'm', 'd')
local deadline = tonumber(f[2])
if not deadline then return nil end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= deadline then
  redis.call('DEL', KEYS[1])
  return nil
end
-- The data is an object of field -> JSON text (strings), so decoding and encoding it here
-- never touches the values themselves: no number loses precision in Lua.
local data = cjson.decode(f[5])
local set_end = 3 + 2 * tonumber(ARGV[3])
for i = 4, set_end, 2 do data[ARGV[i]] = ARGV[i + 1] end
for i = set_end + 1, #ARGV do data[ARGV[i]] = nil end
local encoded = cjson.encode(data)
if #encoded > tonumber(ARGV[2]) then return {-1, #encoded} end

local stamp = string.format('%.0f', now)
redis.call('HSET', KEYS[1], 'l', stamp, 'd', encoded)
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.min(now + tonumber(ARGV[1]), deadline)))
return {stamp, f[2], f[3], f[4], encoded}

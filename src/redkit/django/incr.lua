-- Django's cache.incr/decr: add to an integer entry in place, keeping its expiry.
-- KEYS[1]: the entry ("<fresh>:<created>:<delta>:<swr>|<tags JSON>\nJ-<integer>")
-- ARGV[1]: the amount to add (an integer, may be negative)
-- Returns: {1, new value as text}; {0} if there is no fresh entry; {-1} if the entry is not
--   an integer; {-2} if the result would leave the range a double holds exactly (2^53)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', KEYS[1])
if not v then
  return {0}
end
local head, fresh, tags, number = string.match(v, '^((%d+):%d+:%d+:%d+|)([^\n]*)\nJ%-(%-?%d+)$')
if not head then
  local f = tonumber(string.match(v, '^(%d+):'))
  if f and now < f then
    return {-1}
  end
  return {0}
end
if now >= tonumber(fresh) then
  return {0}
end
local result = tonumber(number) + tonumber(ARGV[1])
if math.abs(result) > 9007199254740992 or string.len(number) > 16 then
  return {-2}
end
local text = string.format('%d', result)
redis.call('SET', KEYS[1], head .. tags .. '\nJ-' .. text, 'KEEPTTL')
return {1, text}

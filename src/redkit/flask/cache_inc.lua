-- Flask-Caching's inc/dec: add to an integer entry in place, keeping its expiry; a key with no
-- fresh entry starts at the amount (as Flask-Caching defines inc).
-- KEYS[1]: the entry ("<fresh>:<created>:<delta>:<swr>|J-<integer>", PX = ttl; the layout
--          put.lua writes, so get.lua reads it)
-- KEYS[2]: the backend's clear() tag set (zset entry key -> expiry ms; trimmed on every write,
--          PX >= its longest-lived member), so that clear() finds a counter made here
-- ARGV[1]: the amount to add (an integer, may be negative)
-- ARGV[2]: ttl ms of an entry made here
-- Returns: {1, new value as text}; {-1} if the entry is not an integer; {-2} if the result
--   would leave the range a double holds exactly (2^53)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local amount = tonumber(ARGV[1])
local v = redis.call('GET', KEYS[1])
if v then
  local head, fresh, number = string.match(v, '^((%d+):%d+:%d+:%d+|)J%-(%-?%d+)$')
  if head and now < tonumber(fresh) then
    local result = tonumber(number) + amount
    if math.abs(result) > 9007199254740992 or string.len(number) > 16 then
      return {-2}
    end
    local text = string.format('%d', result)
    redis.call('SET', KEYS[1], head .. 'J-' .. text, 'KEEPTTL')
    return {1, text}
  end
  local f = tonumber(string.match(v, '^(%d+):'))
  if f and now < f then
    return {-1}
  end
end
local ttl = tonumber(ARGV[2])
local text = string.format('%d', amount)
redis.call('SET', KEYS[1], string.format('%d:%d:0:0|', now + ttl, now) .. 'J-' .. text, 'PX', ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {1, text}

-- announce: a running scheduler says that its schedule is alive, for `redkit jobs schedules`
-- (a registry, so listing schedules needs no SCAN). Not a job transition.
-- KEYS[1]: seen (zset: schedule name -> last announce, ms)   KEYS[2]: info (hash: name -> JSON)
-- ARGV[1]: schedule name   ARGV[2]: its description (JSON)   ARGV[3]: max age (ms)
-- ARGV[4]: max schedules kept
-- Returns: the number of schedules in the registry.
-- Bounded: a schedule not announced within the max age is dropped here (at most 100 per
-- call), and past max schedules the least recently announced go first.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local age, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - age, 'LIMIT', 0, 100)
for _, name in ipairs(stale) do
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
end
local count = redis.call('ZCARD', KEYS[1])
if count > cap then
  local old = redis.call('ZRANGE', KEYS[1], 0, math.min(count - cap, 100) - 1)
  for _, name in ipairs(old) do
    redis.call('ZREM', KEYS[1], name)
    redis.call('HDEL', KEYS[2], name)
  end
  count = count - #old
end
return count

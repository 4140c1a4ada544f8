-- Invalidate tags in one shard: delete the live entries their tag sets list.
-- KEYS[1]: the shard's recent invalidations (zset tag -> server time in microseconds;
--          trimmed to ARGV[1], PX ARGV[1])
-- KEYS[2]: the shard's tag index (zset tag name -> expiry ms; see put.lua): the tags leave it
-- KEYS[3..]: the tag sets (zset entry key -> expiry ms), one per tag
-- ARGV[1]: how long to remember an invalidation, ms (so that a computation that started
--          before it does not store its result after it)
-- ARGV[2..]: the tag names, in the order of KEYS[3..]
-- Returns: the number of entries deleted
-- The entries are not in KEYS: they share the shard's hash tag, hence its slot and node.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Microseconds: scripts run one at a time, so a lookup and an invalidation never share one.
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local removed = 0
for i = 3, #KEYS do
  local members = redis.call('ZRANGEBYSCORE', KEYS[i], now, '+inf')
  for j = 1, #members, 500 do
    removed = removed + redis.call('DEL', unpack(members, j, math.min(j + 499, #members)))
  end
  redis.call('DEL', KEYS[i])
  redis.call('ZADD', KEYS[1], now_us, ARGV[i - 1])
  redis.call('ZREM', KEYS[2], ARGV[i - 1])
end
local keep = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_us - keep * 1000)
redis.call('PEXPIRE', KEYS[1], keep)
return removed

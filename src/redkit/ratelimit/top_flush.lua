-- Add one process's denial counts to a limiter's "most limited keys" ranking.
-- KEYS[1], KEYS[2]: the limiter's ring of two sorted sets (key -> denials), one hash tag; the
--          server's minute m writes into KEYS[1 + m % 2]
-- ARGV[1]: the cap: members kept per set (the most denied; the rest are dropped)
-- ARGV[2], ARGV[3], ...: key, denials, key, denials, ... (the process's pending counts)
-- Returns: the members of the set written, after the cap
-- Bounded: at most ARGV[1] members a set, and each set expires when its slot of the ring
-- comes round again (PEXPIREAT the end of minute m + 1), so the pair holds this minute and
-- the one before. Denials of several processes add up (ZINCRBY).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(now / 60000)
local top = KEYS[1 + minute % 2]
for i = 2, #ARGV, 2 do
  redis.call('ZINCRBY', top, ARGV[i + 1], ARGV[i])
end
local cap = tonumber(ARGV[1])
local size = redis.call('ZCARD', top)
if size > cap then
  redis.call('ZREMRANGEBYRANK', top, 0, size - cap - 1)
  size = cap
end
-- The last ms of minute m + 1: in minute m + 2 this slot starts afresh.
redis.call('PEXPIREAT', top, (minute + 2) * 60000 - 1)
return size

-- Count a semaphore's live permits (leases not yet ended, by the server's clock).
-- KEYS[1]: holders (zset permit token -> lease end ms)
-- ARGV: none
-- Returns: the number of live permits
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')

-- limits storage, moving window: take `amount` entries if the window has room for them.
-- KEYS[1]: the entries, a sorted set '<ns>:{limits:<key>}:m' (score: time in us; at most
--          `limit` members, since an entry is only added while there is room; TTL: the window)
-- KEYS[2]: the entries' sequence number '<ns>:{limits:<key>}:q' (TTL: the window)
-- ARGV[1]: the window, ms
-- ARGV[2]: the limit
-- ARGV[3]: the amount
-- Returns: 1 if the entries were taken, 0 if the window is full
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = tonumber(ARGV[1])
local limit, amount = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window * 1000))
if amount > limit or redis.call('ZCARD', KEYS[1]) + amount > limit then
  return 0
end
-- Members are sequence numbers: two entries taken in one microsecond stay two.
local last = redis.call('INCRBY', KEYS[2], amount)
for i = last - amount + 1, last do
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), i)
end
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return 1

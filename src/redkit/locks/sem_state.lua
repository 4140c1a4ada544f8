-- Read a semaphore's state for an operator (nothing is written).
-- KEYS[1]: holders (zset permit token -> lease end ms)
-- KEYS[2]: queue (zset waiter token -> arrival ms)
-- ARGV: none
-- Returns: {live permits, ms until the longest live lease ends (0 if none), queued waiters}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local longest = 0
if live > 0 then
  longest = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]) - now
end
return {live, longest, redis.call('ZCARD', KEYS[2])}

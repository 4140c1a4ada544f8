-- Return a semaphore permit, and wake as many waiters as there are free permits.
-- KEYS[1]: holders (zset permit token -> lease end ms)
-- KEYS[2]: queue (zset waiter token -> arrival ms)
-- KEYS[3]: deadlines (zset waiter token -> ms after which the waiter is presumed gone)
-- KEYS[4]: wake prefix: waiter W blocks on the list KEYS[4]..':'..W (same hash tag)
-- ARGV[1]: permit token
-- ARGV[2]: limit (permits)
-- ARGV[3]: waiter lease in ms (lifetime of the wake signal)
-- Returns: 1 if the permit was live and is now returned; 0 if it had expired or was unknown
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('ZREM', KEYS[3], unpack(gone))
end
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
if free > 0 then
  for _, waiter in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do
    local list = KEYS[4] .. ':' .. waiter
    redis.call('LPUSH', list, '1')
    redis.call('LTRIM', list, 0, 0)
    redis.call('PEXPIRE', list, ARGV[3])
  end
end
return 1

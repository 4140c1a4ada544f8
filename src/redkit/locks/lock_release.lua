-- Release a lock if this token still holds it, and wake the first waiter.
-- KEYS[1]: owner (string: holder's token)
-- KEYS[2]: queue (zset waiter token -> arrival ms)
-- KEYS[3]: deadlines (zset waiter token -> ms after which the waiter is presumed gone)
-- KEYS[4]: wake prefix: waiter W blocks on the list KEYS[4]..':'..W (same hash tag)
-- ARGV[1]: token
-- ARGV[2]: waiter lease in ms (lifetime of the wake signal, so the list is bounded)
-- Returns: 1 if released; 0 if the token did not hold the lock (nothing is touched then)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 1  -- nobody waits
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('ZREM', KEYS[3], unpack(gone))
end
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if head then
  local list = KEYS[4] .. ':' .. head
  redis.call('LPUSH', list, '1')
  redis.call('LTRIM', list, 0, 0)
  redis.call('PEXPIRE', list, ARGV[2])
end
return 1

-- A waiter gives up (timeout, cancellation): leave the queue, and pass a wake-up on.
-- KEYS[1]: queue (zset waiter token -> arrival ms)
-- KEYS[2]: deadlines (zset waiter token -> ms after which the waiter is presumed gone)
-- KEYS[3]: wake prefix: waiter W blocks on the list KEYS[3]..':'..W (same hash tag)
-- ARGV[1]: waiter token
-- ARGV[2]: waiter lease in ms (lifetime of a passed-on wake signal)
-- Returns: 1 if the waiter was queued, else 0
local mine = KEYS[3] .. ':' .. ARGV[1]
-- A wake signal meant for this waiter must not be lost with it: give it to the next one.
local pending = redis.call('LLEN', mine)
redis.call('DEL', mine)
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if pending > 0 then
  local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if head then
    local list = KEYS[3] .. ':' .. head
    redis.call('LPUSH', list, '1')
    redis.call('LTRIM', list, 0, 0)
    redis.call('PEXPIRE', list, ARGV[2])
  end
end
return removed

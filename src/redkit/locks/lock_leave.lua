-- A waiter gives up (timeout, cancellation, lost reply): leave the queue, release the lock if
-- it was handed over meanwhile, and pass a pending wake-up on.
-- KEYS[1]: owner (string: '<holder's token>@<acquired ms>' or the bare token, see _owner;
--          PX = the holder's ttl)
-- KEYS[2]: fence (the last fencing token, no TTL: tokens must keep increasing)
-- KEYS[3]: queue (zset waiter token -> arrival ms)
-- KEYS[4]: deadlines (zset waiter token -> ms after which the waiter is presumed gone)
-- KEYS[5]: wake prefix: waiter W blocks on the list KEYS[5]..':'..W (same hash tag)
-- ARGV[1]: waiter token
-- ARGV[2]: waiter lease in ms (lifetime of a wake list)
-- Returns: 2 if the lock had been handed to this waiter (or taken by its interrupted attempt)
--          and is now passed on or freed; 1 if the waiter was queued; 0 if neither
local mine = KEYS[5] .. ':' .. ARGV[1]
local pending = redis.call('LLEN', mine)
redis.call('DEL', mine)
local removed = redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
-- @include _owner
local held = holds(redis.call('GET', KEYS[1]), ARGV[1])
if not held and pending == 0 then
  return removed
end
-- Either the lock is ours to pass on (a waiter that leaves never strands a granted lock), or
-- a wake-up meant for us must not be lost with us: the next waiter gets it.
-- @include _fence
-- @include _waiters
prune_gone(server_ms())
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if held then
  if head and hand_over(head, ARGV[2]) then
    return 2
  end
  redis.call('DEL', KEYS[1])
end
if head then
  wake(head, ARGV[2])
end
if held then
  return 2
end
return removed

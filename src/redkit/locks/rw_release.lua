-- Give back a read or write lease of a read-write lock, and wake the waiters that may enter.
-- KEYS[1]: readers (zset reader token -> lease end ms; ended leases are pruned here)
-- KEYS[2]: writer (string: '<writer's token>@<server ms it was acquired>', or the bare
--          token of an older client, see _owner; PX = its lease)
-- KEYS[3]: fence (the last write lease's fencing token; not touched here)
-- KEYS[4]: queue (zset waiter token -> arrival)
-- KEYS[5]: wqueue (zset of the queued writers only, token -> arrival)
-- KEYS[6]: deadlines (zset waiter token -> ms after which the waiter is presumed gone;
--          at most 100 gone waiters are pruned a call)
-- KEYS[7]: wake prefix: waiter W blocks on the list KEYS[7]..':'..W (same hash tag)
-- ARGV[1]: lease token ('r' or 'w', then hex)
-- ARGV[2]: waiter lease in ms (lifetime of a wake signal, so it is bounded)
-- Returns: 1 if the lease was live and is now given back; 0 if it had ended or was unknown
--          (nothing is freed then: a writer's key is deleted only if it holds this token)
--
-- No hand-over: the woken waiters try again (readers enter together, a writer alone).
local token, lease = ARGV[1], ARGV[2]

-- @include _owner
-- @include _rw
local now = server_ms()
prune_readers(now)
if string.sub(token, 1, 1) == 'w' then
  if not holds(redis.call('GET', KEYS[2]), token) then
    return 0
  end
  redis.call('DEL', KEYS[2])
elseif redis.call('ZREM', KEYS[1], token) == 0 then
  return 0
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  return 1  -- nobody waits
end
prune_gone(now)
wake_next(lease)
return 1

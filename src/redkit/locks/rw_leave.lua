-- A waiter gives up (timeout, cancellation, lost reply): leave the queue, give back a lease its
-- interrupted attempt may have taken, and wake whoever may enter now.
-- KEYS[1]: readers (zset reader token -> lease end ms; ended leases are pruned here)
-- KEYS[2]: writer (string: '<writer's token>@<server ms it was acquired>', or the bare
--          token of an older client, see _owner; PX = its lease)
-- KEYS[3]: fence (the last write lease's fencing token; not touched here)
-- KEYS[4]: queue (zset waiter token -> arrival)
-- KEYS[5]: wqueue (zset of the queued writers only, token -> arrival)
-- KEYS[6]: deadlines (zset waiter token -> ms after which the waiter is presumed gone;
--          at most 100 gone waiters are pruned a call)
-- KEYS[7]: wake prefix: waiter W blocks on the list KEYS[7]..':'..W (same hash tag)
-- ARGV[1]: waiter token ('r' or 'w', then hex)
-- ARGV[2]: waiter lease in ms (lifetime of a wake signal)
-- Returns: 2 if the token held a lease (taken by an interrupted attempt), now given back;
--          1 if the waiter was queued; 0 if neither
--
-- Also acquire's undo, as lock_leave is the lock's. Whoever leaves may unblock others: a
-- queued writer that leaves lets the readers queued behind it in, a head that leaves makes
-- room for the next, and a wake-up meant for the leaver must not be lost with it. So unless
-- the token was unknown, the waiters that may enter now are woken (wake_next wakes only those).
local token, lease = ARGV[1], ARGV[2]
-- @include _owner
local mine = KEYS[7] .. ':' .. token
local pending = redis.call('LLEN', mine)
redis.call('DEL', mine)
local removed = redis.call('ZREM', KEYS[4], token)
redis.call('ZREM', KEYS[5], token)
redis.call('ZREM', KEYS[6], token)
local held = 0
if string.sub(token, 1, 1) == 'w' then
  if holds(redis.call('GET', KEYS[2]), token) then
    redis.call('DEL', KEYS[2])
    held = 1
  end
else
  held = redis.call('ZREM', KEYS[1], token)
end
if removed == 0 and pending == 0 and held == 0 then
  return 0
end

-- @include _rw
local now = server_ms()
prune_readers(now)
prune_gone(now)
wake_next(lease)
if held == 1 then
  return 2
end
return removed

-- Take a lock if it is free (when fair: only if no earlier waiter is queued for it), or find
-- that a releasing holder already handed it to this waiter.
-- KEYS[1]: owner: string '<holder's token>@<server ms it was acquired>' (see _owner), PX =
--          the lock's ttl (bounded by its TTL)
-- KEYS[2]: fence: the last fencing token (an integer, server microseconds or above, see
--          _fence), no TTL on purpose: tokens must keep increasing across expiry and
--          restarts, so it is durable; one small integer per lock name
-- KEYS[3]: queue: zset waiter token -> arrival (ms, strictly increasing) (bounded: pruned by KEYS[4], and PEXPIREd
--          to the waiter lease, so it vanishes when no waiter refreshes it)
-- KEYS[4]: deadlines: zset waiter token -> ms after which the waiter is presumed gone
-- KEYS[5]: wake prefix: waiter W blocks on the list KEYS[5]..':'..W (same hash tag; the list
--          is PEXPIREd to the waiter lease by whoever pushes onto it)
-- ARGV[1]: token of this attempt (also its waiter id; ends in 's.' and the ttl in ms, which a
--          releasing holder reads when it hands the lock over)
-- ARGV[2]: ttl in ms
-- ARGV[3]: 1 to join the wait queue if the lock is taken, 0 to leave it alone
-- ARGV[4]: 1 if fair (FIFO): a free lock goes to the first waiter in the queue
-- ARGV[5]: waiter lease in ms (queue entry and wake-list lifetime)
-- Returns: {1, fencing token} when acquired (or already handed over to this token);
--          {0, ms until the owner's lease ends} when not, or {0, -1} when there is no expiry
--          to wait for (a wake signal will come)
local token, lease = ARGV[1], tonumber(ARGV[5])

-- @include _fence

-- The common case first: a free lock, no fairness to honour, nobody queued. (owner_value of
-- _owner, inlined: this path defines no function, and the token is this client's, stamped.)
-- One TIME for both the stamp and the fencing token.
if ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], token .. '@' .. t[1] .. string.format('%03d', math.floor(t[2] / 1000)),
    'PX', ARGV[2])
  return {1, next_fence(KEYS[2], t)}
end

-- @include _owner

local mine = KEYS[5] .. ':' .. token
local owner = redis.call('GET', KEYS[1])
if holds(owner, token) then
  -- Handed over by the holder's release while we were not blocked on our wake list. The
  -- fence counter's value is ours: every acquisition increments it and sets the owner.
  redis.call('DEL', mine)
  return {1, tonumber(redis.call('GET', KEYS[2]))}
end

-- @include _waiters
-- @include _arrival
local now = server_ms()
prune_gone(now)

if not owner then
  local head = nil
  if ARGV[4] == '1' then
    head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  end
  if head == nil or head == token then
    redis.call('SET', KEYS[1], owner_value(token, now), 'PX', ARGV[2])
    local fence = next_fence(KEYS[2])
    redis.call('ZREM', KEYS[3], token)
    redis.call('ZREM', KEYS[4], token)
    redis.call('DEL', mine)
    return {1, fence}
  end
  -- Free, but promised to an earlier waiter: make sure that one is awake.
  wake(head, lease)
end

-- Whatever waits on our list is older than what this attempt just saw (a wake already acted
-- on, or a hand-over whose lease has since ended): drop it, so a BLPOP never returns a stale
-- hand-over.
redis.call('DEL', mine)
if ARGV[3] == '1' then
  if not redis.call('ZSCORE', KEYS[3], token) then
    redis.call('ZADD', KEYS[3], arrival(KEYS[3], now), token)
  end
  redis.call('ZADD', KEYS[4], now + lease, token)
  if redis.call('PTTL', KEYS[3]) < lease then
    redis.call('PEXPIRE', KEYS[3], lease)
    redis.call('PEXPIRE', KEYS[4], lease)
  end
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then
  return {0, -1}
end
return {0, pttl}

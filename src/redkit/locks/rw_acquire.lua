-- Take a read or write lease of a read-write lock if the fairness rule allows it, else queue.
-- KEYS[1]: readers: zset reader token -> lease end ms (bounded: ended leases are pruned on
--          every call, and the key's TTL is kept at the longest lease)
-- KEYS[2]: writer: string '<writer's token>@<server ms it was acquired>' (see _owner), PX =
--          its lease (bounded by its TTL)
-- KEYS[3]: fence: the last write lease's fencing token (an integer, server microseconds or
--          above, see _fence), no TTL on purpose: tokens must keep increasing across expiry
--          and restarts; one small integer per lock name
-- KEYS[4]: queue: zset waiter token -> arrival (server ms, strictly increasing) (bounded:
--          gone waiters are pruned through KEYS[6], and the key is PEXPIREd to the waiter
--          lease, so it vanishes when no waiter refreshes it)
-- KEYS[5]: wqueue: zset of the queued writers only, token -> arrival (a subset of KEYS[4],
--          pruned and PEXPIREd with it)
-- KEYS[6]: deadlines: zset waiter token -> ms after which the waiter is presumed gone
--          (pruned at most 100 a call; PEXPIREd to the waiter lease)
-- KEYS[7]: wake prefix: waiter W blocks on the list KEYS[7]..':'..W (same hash tag; the list
--          is PEXPIREd to the waiter lease by whoever pushes onto it)
-- ARGV[1]: token of this attempt (also its waiter id): 'r' or 'w' (its mode), then hex
-- ARGV[2]: lease ttl in ms
-- ARGV[3]: 1 to join the wait queue if the lease cannot be taken now, 0 to leave it alone
-- ARGV[4]: waiter lease in ms (queue entry and wake-list lifetime)
-- Returns: {1, fencing token} when acquired: a writer's own new token, or for a reader the
--          token of the latest writer before this read (0 if none); {0, ms until the lease
--          that blocks this attempt ends} when not (the writer's, or for a writer blocked by
--          readers the earliest read lease's), or {0, -1} when only the queue order blocks
--          it (a wake signal will come)
--
-- The rule: a reader enters if no writer holds and no queued writer arrived before it; a
-- writer enters if nobody holds and it is first in the queue (or the queue is empty). So a
-- queued writer is not starved by readers that keep coming: they queue behind it.
local token, ttl, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local writing = string.sub(token, 1, 1) == 'w'
local mine = KEYS[7] .. ':' .. token

-- @include _rw
-- @include _arrival
-- @include _fence
local now = server_ms()
prune_readers(now)
local pruned = prune_gone(now)

local rank = redis.call('ZRANK', KEYS[4], token)
local ok = false
if redis.call('EXISTS', KEYS[2]) == 0 then
  if writing then
    if redis.call('ZCARD', KEYS[1]) == 0 then
      ok = rank == 0 or (not rank and redis.call('EXISTS', KEYS[4]) == 0)
    end
  else
    local writer_rank = first_writer_rank()
    ok = not writer_rank or (rank and rank < writer_rank)
  end
end

if ok then
  local fence
  if writing then
    -- The acquisition time rides in the value (the time held an operator sees): no key more.
    redis.call('SET', KEYS[2], token .. '@' .. string.format('%.0f', now), 'PX', ttl)
    fence = next_fence(KEYS[3])
  else
    redis.call('ZADD', KEYS[1], now + ttl, token)
    if redis.call('PTTL', KEYS[1]) < ttl then
      redis.call('PEXPIRE', KEYS[1], ttl)
    end
    fence = tonumber(redis.call('GET', KEYS[3]) or 0)
  end
  if rank then
    redis.call('ZREM', KEYS[4], token)
    redis.call('ZREM', KEYS[5], token)
    redis.call('ZREM', KEYS[6], token)
  end
  redis.call('DEL', mine)
  if pruned > 0 then
    -- Waiters presumed gone were dropped: readers queued behind a dropped writer may enter.
    wake_next(lease)
  elseif rank and not writing then
    slide_readers(lease)
  end
  return {1, fence}
end

-- Whatever waits on our list is older than what this attempt just saw: drop it, so the next
-- BLPOP waits for a newer wake-up instead of returning at once for nothing.
redis.call('DEL', mine)
if ARGV[3] == '1' then
  local queued = {KEYS[4], KEYS[6]}
  if not rank then
    -- Strictly after every earlier arrival ('r' < 'w' would otherwise let a reader pass a
    -- writer that came in the same millisecond).
    local score = arrival(KEYS[4], now)
    redis.call('ZADD', KEYS[4], score, token)
    if writing then
      -- The same score in wqueue, so that both order the writers alike.
      redis.call('ZADD', KEYS[5], score, token)
    end
  end
  if writing then
    queued[3] = KEYS[5]
  end
  redis.call('ZADD', KEYS[6], now + lease, token)
  for _, key in ipairs(queued) do
    if redis.call('PTTL', key) < lease then
      redis.call('PEXPIRE', key, lease)
    end
  end
end
-- A woken waiter that stalled (slow, or its wake-up was lost) is nudged again.
wake_next(lease)

local pttl = redis.call('PTTL', KEYS[2])
if pttl >= 0 then
  return {0, pttl}
end
if writing then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then
    return {0, math.max(0, tonumber(first[2]) - now)}
  end
end
return {0, -1}

-- The read-write lock's shared steps, pasted into rw_acquire, rw_release and rw_leave where a
-- script says `-- @include _rw` (see redkit.scripts). Those scripts' KEYS: [1] readers,
-- [2] writer, [3] fence, [4] queue, [5] wqueue, [6] deadlines, [7] wake prefix (waiter W
-- blocks on the list <prefix>:W). A token's first character is its mode: 'r' or 'w'.

-- The server's time in ms.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop ended read leases. Bounded by the number of readers that held at once (each entry is
-- a lease that was live when added); the key's TTL is the longest lease.
local function prune_readers(now)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end

-- Drop waiters whose deadline passed (presumed gone) from queue, wqueue and deadlines: at most
-- 100 a call, so the work of one call stays bounded; the rest go on later calls. Returns how
-- many were dropped.
local function prune_gone(now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, 100)
  if #gone > 0 then
    redis.call('ZREM', KEYS[4], unpack(gone))
    redis.call('ZREM', KEYS[5], unpack(gone))
    redis.call('ZREM', KEYS[6], unpack(gone))
  end
  return #gone
end

-- The rank in the queue of the first queued writer, or false if no writer is queued. The
-- writers of wqueue are also in queue, with the same arrival score, so both order them alike.
-- An entry of wqueue that is missing from queue (only if someone edited the keys) is dropped;
-- at most 10 a call.
local function first_writer_rank()
  for _ = 1, 10 do
    local writer = redis.call('ZRANGE', KEYS[5], 0, 0)[1]
    if not writer then
      return false
    end
    local rank = redis.call('ZRANK', KEYS[4], writer)
    if rank then
      return rank
    end
    redis.call('ZREM', KEYS[5], writer)
  end
  return false
end

-- Wake waiter `waiter` (it tries again). RPUSH + LTRIM keeps at most one element, so repeated
-- wake-ups collapse into one; the list lives for `lease` ms.
local function wake(waiter, lease)
  local list = KEYS[7] .. ':' .. waiter
  redis.call('RPUSH', list, '1')
  redis.call('LTRIM', list, 0, 0)
  redis.call('PEXPIRE', list, lease)
end

-- Wake the waiters that may enter now, and only those: nobody while a writer holds; a writer
-- at the head of the queue once no read lease is live; else every reader queued before the
-- first queued writer, at most 100 a call (each of them that enters wakes the next one, see
-- slide_readers). Read leases must have been pruned first.
local function wake_next(lease)
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return
  end
  local head = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
  if not head then
    return
  end
  if string.sub(head, 1, 1) == 'w' then
    if redis.call('ZCARD', KEYS[1]) == 0 then
      wake(head, lease)
    end
    return
  end
  local stop = 100
  local rank = first_writer_rank()
  if rank and rank < stop then
    stop = rank
  end
  for _, reader in ipairs(redis.call('ZRANGE', KEYS[4], 0, stop - 1)) do
    wake(reader, lease)
  end
end

-- A queued reader that enters shifts the queue by one: the reader that moves into the woken
-- window (rank 99, the 100th) is woken, if no queued writer comes before it. So a herd of more
-- than 100 readers enters in a stream, each entry letting in the next, without waking the
-- whole herd at once (that would cost one wake per reader per entry).
local function slide_readers(lease)
  local rank = first_writer_rank()
  if rank and rank <= 99 then
    return
  end
  local reader = redis.call('ZRANGE', KEYS[4], 99, 99)[1]
  if reader then
    wake(reader, lease)
  end
end

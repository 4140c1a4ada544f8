-- The lock's wait queue, shared by lock_acquire, lock_release and lock_leave (pasted in where
-- a script says `-- @include _waiters`, after `-- @include _owner` and `-- @include _fence`;
-- see redkit.scripts). Those scripts' KEYS: [1] owner, [2] fence, [3] queue, [4] deadlines,
-- [5] wake prefix (waiter W blocks on <prefix>:W).

-- The server's time in ms.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drop waiters whose deadline passed (presumed gone): at most 100 a call, so the work of one
-- call stays bounded; the rest go on later calls.
local function prune_gone(now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
  if #gone > 0 then
    redis.call('ZREM', KEYS[3], unpack(gone))
    redis.call('ZREM', KEYS[4], unpack(gone))
  end
end

-- Hand the lock to waiter `head`: it becomes the owner with its own ttl (the digits after the
-- last '.' of its token) and the next fencing token, which is pushed onto its wake list, so
-- its BLPOP returns holding the lock. The grant expires with the lease: a waiter that pops
-- only later (it was not blocked yet) finds nothing, never a lapsed lock. False when the
-- token carries no ttl (an older client): the caller frees the lock and wakes it instead.
local function hand_over(head, lease)
  local ttl = string.match(head, '%.(%d+)$')
  if not ttl then
    return false
  end
  local list = KEYS[5] .. ':' .. head
  redis.call('ZREM', KEYS[3], head)
  redis.call('ZREM', KEYS[4], head)
  redis.call('SET', KEYS[1], owner_value(head, server_ms()), 'PX', ttl)
  local fence = next_fence(KEYS[2])
  redis.call('DEL', list)
  redis.call('RPUSH', list, fence)
  redis.call('PEXPIRE', list, math.min(tonumber(ttl), tonumber(lease)))
  return true
end

-- Wake waiter `head` without handing it anything. RPUSH + LTRIM keeps the oldest element, so
-- a pending hand-over is never replaced by a mere wake. The list lives for `lease` ms.
local function wake(head, lease)
  local list = KEYS[5] .. ':' .. head
  redis.call('RPUSH', list, '1')
  redis.call('LTRIM', list, 0, 0)
  redis.call('PEXPIRE', list, lease)
end

-- Take one permit of a semaphore if fewer than `limit` live leases exist.
-- KEYS[1]: holders: zset permit token -> lease end ms (bounded: expired leases are pruned
--          here, and the key's TTL is kept at the longest lease)
-- KEYS[2]: queue: zset waiter token -> arrival (ms, strictly increasing) (pruned by KEYS[3],
--          PEXPIREd to the lease)
-- KEYS[3]: deadlines: zset waiter token -> ms after which the waiter is presumed gone
-- KEYS[4]: wake prefix: waiter W blocks on the list KEYS[4]..':'..W (same hash tag)
-- ARGV[1]: token of this attempt (also its waiter id)
-- ARGV[2]: limit (permits)
-- ARGV[3]: lease ttl in ms
-- ARGV[4]: 1 to join the wait queue if no permit is free
-- ARGV[5]: 1 if fair (FIFO): free permits go to the earliest waiters first
-- ARGV[6]: waiter lease in ms (queue entry and wake-list lifetime)
-- Returns: {1, permits held now} when acquired; {0, ms until the earliest lease ends} when
--          not, or {0, -1} when there is no expiry to wait for (a wake signal will come)
-- @include _arrival
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, limit, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local lease = tonumber(ARGV[6])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
if #gone > 0 then
  redis.call('ZREM', KEYS[2], unpack(gone))
  redis.call('ZREM', KEYS[3], unpack(gone))
end

local held = redis.call('ZCARD', KEYS[1])
local free = limit - held
if free > 0 then
  local ahead = 0
  if ARGV[5] == '1' then
    local rank = redis.call('ZRANK', KEYS[2], token)
    if rank then ahead = rank else ahead = redis.call('ZCARD', KEYS[2]) end
  end
  if ahead < free then
    redis.call('ZADD', KEYS[1], now + ttl, token)
    if redis.call('PTTL', KEYS[1]) < ttl then
      redis.call('PEXPIRE', KEYS[1], ttl)
    end
    redis.call('ZREM', KEYS[2], token)
    redis.call('ZREM', KEYS[3], token)
    redis.call('DEL', KEYS[4] .. ':' .. token)
    return {1, held + 1}
  end
  -- Free permits promised to earlier waiters: make sure those are awake.
  for _, waiter in ipairs(redis.call('ZRANGE', KEYS[2], 0, free - 1)) do
    local list = KEYS[4] .. ':' .. waiter
    redis.call('LPUSH', list, '1')
    redis.call('LTRIM', list, 0, 0)
    redis.call('PEXPIRE', list, lease)
  end
end

if ARGV[4] == '1' then
  if not redis.call('ZSCORE', KEYS[2], token) then
    redis.call('ZADD', KEYS[2], arrival(KEYS[2], now), token)
  end
  redis.call('ZADD', KEYS[3], now + lease, token)
  if redis.call('PTTL', KEYS[2]) < lease then
    redis.call('PEXPIRE', KEYS[2], lease)
    redis.call('PEXPIRE', KEYS[3], lease)
  end
end
if free > 0 then
  return {0, -1}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
  return {0, math.max(0, tonumber(first[2]) - now)}
end
return {0, -1}

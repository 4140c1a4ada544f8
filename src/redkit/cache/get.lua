-- Look up one entry; on a miss, take the single-flight lock or queue as a waiter.
-- KEYS[1]: the entry (string "<fresh_until_ms>:<created_ms>:<delta_ms>:<swr_ms>|<payload>",
--          PX = ttl + stale windows)
-- KEYS[2]: the single-flight lock (hash token/since/waiters, PX = lock timeout)
-- KEYS[3]: the notify list that waiters BLPOP (bounded: PX set where it is pushed)
-- ARGV[1]: "fetch" (may take the lock to compute) or "peek" (a plain get)
-- ARGV[2]: XFetch's random gap factor, beta * -ln(rand) (0 turns early recomputation off)
-- ARGV[3]: the lock token this caller would hold
-- ARGV[4]: the lock timeout in ms
-- Returns: {status, entry or false, age_ms, lock_pttl_ms, now_us}; status 0 wait for the
--   holder, 1 miss (lock taken: compute), 2 hit, 3 hit + early refresh (lock taken),
--   4 stale (someone refreshes), 5 stale + refresh (lock taken), 6 miss (peek)
-- A hit writes nothing (the client counts it): a read-only script is the cheapest call.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Microseconds for ordering against invalidations (see put.lua); exact in a Lua double.
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('GET', KEYS[1])
local fresh, created, delta, swr = 0, 0, 0, 0
if v then
  local a, b, c, d = string.match(v, '^(%d+):(%d+):(%d+):(%d+)|')
  fresh, created, delta, swr = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
end

if ARGV[1] == 'peek' then
  if v and now < fresh then
    return {2, v, now - created, 0, now_us}
  end
  return {6, false, 0, 0, now_us}
end

if v and now < fresh then
  -- XFetch (Vattani et al., VLDB 2015): recompute early when
  -- now - delta * beta * ln(rand) >= expiry, i.e. with a probability that grows as expiry
  -- nears, scaled by how long the value took to compute. The lock makes it one caller.
  if delta == 0 or now + delta * tonumber(ARGV[2]) < fresh
      or redis.call('EXISTS', KEYS[2]) == 1 then
    return {2, v, now - created, 0, now_us}
  end
  redis.call('HSET', KEYS[2], 'token', ARGV[3], 'since', now, 'waiters', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('DEL', KEYS[3])
  return {3, v, now - created, 0, now_us}
end

-- Defined after the hit path so that a hit does not pay for the closure.
local function lock()
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return false
  end
  redis.call('HSET', KEYS[2], 'token', ARGV[3], 'since', now, 'waiters', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  -- Tokens left over from an earlier round must not wake this round's waiters.
  redis.call('DEL', KEYS[3])
  return true
end

if v and now < fresh + swr then
  -- RFC 5861 stale-while-revalidate: serve the stale value, one caller refreshes.
  if lock() then
    return {5, v, now - created, 0, now_us}
  end
  return {4, v, now - created, 0, now_us}
end

-- A miss. A value still here is past its windows but within stale-if-error: it goes back
-- as a fallback for a computation that fails.
local age = 0
if v then age = now - created else v = false end
if lock() then
  return {1, v, age, 0, now_us}
end
redis.call('HINCRBY', KEYS[2], 'waiters', 1)
return {0, v, age, redis.call('PTTL', KEYS[2]), now_us}

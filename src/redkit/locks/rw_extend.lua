-- Renew a read or write lease of a read-write lock to ttl from now, if it is still live.
-- KEYS[1]: readers (zset reader token -> lease end ms; key TTL = the longest lease)
-- KEYS[2]: writer (string: '<writer's token>@<server ms it was acquired>', or the bare
--          token of an older client, see _owner; PX = its lease)
-- ARGV[1]: lease token ('r' or 'w', then hex)
-- ARGV[2]: lease ttl in ms
-- Returns: 1 if renewed; 0 if the lease had ended (a read lease is then removed), was taken
--          over or was unknown
local token, ttl = ARGV[1], tonumber(ARGV[2])
-- @include _owner
if string.sub(token, 1, 1) == 'w' then
  if not holds(redis.call('GET', KEYS[2]), token) then
    return 0
  end
  -- PEXPIRE keeps the value: the acquisition time stays that of the acquisition.
  redis.call('PEXPIRE', KEYS[2], ttl)
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], token)
if not score then
  return 0
end
if tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], token)
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + ttl, token)
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1

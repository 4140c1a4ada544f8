-- Renew a semaphore permit's lease to ttl from now, if it is still live.
-- KEYS[1]: holders (zset permit token -> lease end ms; key TTL = the longest lease)
-- ARGV[1]: permit token
-- ARGV[2]: lease ttl in ms
-- Returns: 1 if renewed; 0 if the permit had expired (it is then removed) or was unknown
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
if tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1

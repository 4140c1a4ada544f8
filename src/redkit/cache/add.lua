-- cache.add (the Django and Flask-Caching backends): store a value only if the key holds
-- no fresh entry.
-- KEYS[1]: the entry (PX = ttl; the layout put.lua writes, so get.lua reads it)
-- KEYS[2..]: one tag set per tag (zset entry key -> expiry ms; trimmed on every write,
--            PX >= its longest-lived member)
-- ARGV[1]: the payload; ARGV[2]: ttl ms
-- Returns: 1 if stored, 0 if a fresh entry was already there (left as it is)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', KEYS[1])
if v then
  local fresh = tonumber(string.match(v, '^(%d+):'))
  if fresh and now < fresh then
    return 0
  end
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%d:%d:0:0|', now + ttl, now) .. ARGV[1], 'PX', ttl)
for i = 2, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  redis.call('ZADD', KEYS[i], now + ttl, KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1

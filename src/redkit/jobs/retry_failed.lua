-- retry_failed: failed -> waiting for the oldest ARGV[3] jobs of the failed set
-- (see redkit/jobs/states.py): "retry all failed", in bounded steps; the caller repeats
-- until it returns 0. Like retry.lua, attempts start again from zero.
-- KEYS[1]: waiting   KEYS[2]: failed   KEYS[3]: sequence counter   KEYS[4]: events
-- KEYS[5]: wake list
-- ARGV[1]: job hash prefix   ARGV[2]: events MAXLEN (0: none)   ARGV[3]: max jobs per call
-- Returns: how many ids left the failed set in this call (0: it is empty).
local prefix, maxlen = ARGV[1], tonumber(ARGV[2])
local ids = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[3]) - 1)
local moved = 0
for _, id in ipairs(ids) do
  local jkey = prefix .. id
  local f = redis.call('HMGET', jkey, 'state', 'prio')
  redis.call('ZREM', KEYS[2], id)
  if f[1] == 'failed' then
    local seq = redis.call('INCR', KEYS[3])
    redis.call('ZADD', KEYS[1], (1000 - tonumber(f[2])) * 1000000000000 + seq % 1000000000000,
      id)
    redis.call('HSET', jkey, 'state', 'waiting', 'attempts', 0)
    redis.call('HDEL', jkey, 'cancel', 'finished', 'owner')
    redis.call('PERSIST', jkey)
    if maxlen > 0 then
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'event', 'enqueued', 'job', id)
    end
    moved = moved + 1
  end
end
if moved > 0 then
  local room = 64 - redis.call('LLEN', KEYS[5])
  for _ = 1, math.min(moved, room) do redis.call('RPUSH', KEYS[5], '1') end
end
return #ids

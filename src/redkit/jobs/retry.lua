-- retry: failed | cancelled -> waiting (see redkit/jobs/states.py), by hand: the attempts
-- start again from zero, the last error stays readable until the job runs again.
-- KEYS[1]: waiting   KEYS[2]: failed   KEYS[3]: sequence counter   KEYS[4]: events
-- KEYS[5]: wake list   KEYS[6]: cancelled
-- ARGV[1]: job hash prefix   ARGV[2]: job id   ARGV[3]: events MAXLEN (0: none)
-- Returns: the job's state before the call, or false if there is no such job; only a failed
--   or cancelled job is moved.
local prefix, id = ARGV[1], ARGV[2]
local jkey = prefix .. id
local f = redis.call('HMGET', jkey, 'state', 'prio')
if not f[1] then return false end
if f[1] == 'failed' or f[1] == 'cancelled' then
  local seq = redis.call('INCR', KEYS[3])
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[6], id)
  redis.call('ZADD', KEYS[1], (1000 - tonumber(f[2])) * 1000000000000 + seq % 1000000000000, id)
  redis.call('HSET', jkey, 'state', 'waiting', 'attempts', 0)
  redis.call('HDEL', jkey, 'cancel', 'finished', 'owner')
  redis.call('PERSIST', jkey)
  if tonumber(ARGV[3]) > 0 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', tonumber(ARGV[3]), '*', 'event', 'enqueued',
      'job', id)
  end
  if redis.call('LLEN', KEYS[5]) < 64 then redis.call('RPUSH', KEYS[5], '1') end
end
return f[1]

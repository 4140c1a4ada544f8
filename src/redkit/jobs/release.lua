-- release: active -> waiting (see redkit/jobs/states.py): a worker shutting down gracefully
-- hands back the jobs it could not finish within its grace period. The attempt is refunded
-- (the job did not fail); the job goes to the back of its priority.
-- KEYS[1]: waiting   KEYS[2]: active   KEYS[3]: sequence counter   KEYS[4]: events
-- KEYS[5]: wake list
-- ARGV[1]: job hash prefix   ARGV[2]: worker id   ARGV[3]: events MAXLEN (0: none)
-- ARGV[4]: N, then 2 values per job: id, attempt
-- Returns: how many jobs were handed back.
local prefix, worker, maxlen, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local count = 0
for i = 0, n - 1 do
  local id, attempt = ARGV[5 + i * 2], ARGV[6 + i * 2]
  local jkey = prefix .. id
  local f = redis.call('HMGET', jkey, 'state', 'owner', 'attempts', 'prio')
  if f[1] == 'active' and f[2] == worker and f[3] == attempt then
    local seq = redis.call('INCR', KEYS[3])
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[1], (1000 - tonumber(f[4])) * 1000000000000 + seq % 1000000000000,
      id)
    redis.call('HSET', jkey, 'state', 'waiting', 'attempts', tonumber(attempt) - 1)
    redis.call('HDEL', jkey, 'owner')
    if maxlen > 0 then
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'event', 'released', 'job', id)
    end
    count = count + 1
  end
end
if count > 0 and redis.call('LLEN', KEYS[5]) < 64 then redis.call('RPUSH', KEYS[5], '1') end
return count

-- cancel: waiting | delayed | retrying -> cancelled; active -> (cancel requested)
-- (see redkit/jobs/states.py). A pending job is cancelled at once and kept in the cancelled
-- set, which is bounded like the failed set (count and age). An active job is flagged: its
-- worker learns at its next heartbeat, stops the function, and the fail script records it as
-- cancelled.
-- KEYS[1]: waiting   KEYS[2]: delayed   KEYS[3]: cancelled   KEYS[4]: events
-- ARGV[1]: job hash prefix   ARGV[2]: done-list prefix   ARGV[3]: job id
-- ARGV[4]: cancelled jobs' max age (ms)   ARGV[5]: events MAXLEN (0: none)
-- ARGV[6]: cancelled jobs to keep
-- Returns: the job's state before the call ("active" means: cancel requested), or false if
--   there is no such job. Completed, failed and cancelled jobs are left as they are.
-- @include _trim

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A finished set is scored in ms with the microseconds as a fraction: two jobs finished in
-- one ms still list (and trim) newest first, not by id.
local order = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local prefix, done_prefix, id = ARGV[1], ARGV[2], ARGV[3]
local jkey = prefix .. id
local f = redis.call('HMGET', jkey, 'state', 'notify')
local state = f[1]
if not state then return false end
if state == 'active' then
  redis.call('HSET', jkey, 'cancel', '1')
elseif state == 'waiting' or state == 'delayed' or state == 'retrying' then
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('HSET', jkey, 'state', 'cancelled', 'finished', now, 'error', 'cancelled')
  redis.call('PEXPIRE', jkey, tonumber(ARGV[4]))
  redis.call('ZADD', KEYS[3], order, id)
  trim(KEYS[3], prefix, tonumber(ARGV[6]), tonumber(ARGV[4]), now)
  if tonumber(ARGV[5]) > 0 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', tonumber(ARGV[5]), '*', 'event', 'cancelled',
      'job', id)
  end
  if f[2] then
    local dkey = done_prefix .. id
    for _ = 1, math.min(tonumber(f[2]), 100) do redis.call('RPUSH', dkey, 'cancelled') end
    redis.call('PEXPIRE', dkey, 60000)
    redis.call('HDEL', jkey, 'notify')
  end
end
return state

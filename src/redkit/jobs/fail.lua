-- fail: active -> retrying | failed | cancelled (see redkit/jobs/states.py): the attempt
-- raised, timed out, or was cancelled. With attempts left (and retryable, and no cancel
-- request) the job waits out an exponential backoff in the delayed set; otherwise it goes to
-- the failed set (the dead letter), which is then trimmed to its bounds.
-- KEYS[1]: active   KEYS[2]: delayed   KEYS[3]: failed   KEYS[4]: events   KEYS[5]: wake list
-- KEYS[6]: failed-job search index (hash id -> lower-cased "function\nerror head"; an entry
--   per id of the failed set, removed when the id is trimmed or retried: bounded like it)
-- ARGV[1]: job hash prefix   ARGV[2]: done-list prefix   ARGV[3]: worker id   ARGV[4]: job id
-- ARGV[5]: attempt   ARGV[6]: error text   ARGV[7]: traceback text
-- ARGV[8]: retryable (1/0)   ARGV[9]: jitter factor (e.g. 0.8-1.2, chosen by the caller)
-- ARGV[10]: backoff cap (ms)   ARGV[11]: failed jobs to keep   ARGV[12]: failed max age (ms)
-- ARGV[13]: events MAXLEN (0: none)
-- Returns: the new state ("retrying", "failed" or "cancelled"), or false if the job is no
--   longer this worker's attempt (nothing changed).
-- Backoff before attempt a+1: min(cap, backoff * 2^(a-1)) * jitter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, done_prefix, worker, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local maxlen = tonumber(ARGV[13])
local jkey = prefix .. id
local f = redis.call('HMGET', jkey, 'state', 'owner', 'attempts', 'max', 'backoff', 'cancel',
  'notify')
if f[1] ~= 'active' or f[2] ~= worker or f[3] ~= ARGV[5] then
  return false
end
local attempts, max = tonumber(f[3]), tonumber(f[4])
redis.call('ZREM', KEYS[1], id)
redis.call('HDEL', jkey, 'owner')
local state
if f[6] ~= '1' and ARGV[8] == '1' and attempts < max then
  state = 'retrying'
  local delay = math.min(tonumber(ARGV[10]), tonumber(f[5]) * 2 ^ (attempts - 1))
  delay = math.floor(delay * tonumber(ARGV[9]))
  redis.call('HSET', jkey, 'state', state, 'error', ARGV[6], 'traceback', ARGV[7],
    'due', now + delay)
  redis.call('ZADD', KEYS[2], now + delay, id)
  -- Wake one idle worker so that it learns the new due time (it blocks until then).
  if redis.call('LLEN', KEYS[5]) < 64 then redis.call('RPUSH', KEYS[5], '1') end
else
  state = 'failed'
  if f[6] == '1' then state = 'cancelled' end
  redis.call('HSET', jkey, 'state', state, 'error', ARGV[6], 'traceback', ARGV[7],
    'finished', now)
  local age = tonumber(ARGV[12])
  redis.call('PEXPIRE', jkey, age)
  redis.call('ZADD', KEYS[3], now, id)
  local fn = redis.call('HGET', jkey, 'fn') or ''
  redis.call('HSET', KEYS[6], id, string.lower(fn .. '\n' .. string.sub(ARGV[6], 1, 300)))
  if f[7] then
    local dkey = done_prefix .. id
    for _ = 1, math.min(tonumber(f[7]), 100) do redis.call('RPUSH', dkey, state) end
    redis.call('PEXPIRE', dkey, 60000)
    redis.call('HDEL', jkey, 'notify')
  end
  local keep = tonumber(ARGV[11])
  local count = redis.call('ZCARD', KEYS[3])
  if count > keep then
    local old = redis.call('ZRANGE', KEYS[3], 0, math.min(count - keep, 1000) - 1)
    for _, old_id in ipairs(old) do
      redis.call('DEL', prefix .. old_id)
      redis.call('HDEL', KEYS[6], old_id)
    end
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, #old - 1)
  end
  local aged = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - age, 'LIMIT', 0, 100)
  for _, old_id in ipairs(aged) do
    redis.call('DEL', prefix .. old_id)
    redis.call('ZREM', KEYS[3], old_id)
    redis.call('HDEL', KEYS[6], old_id)
  end
end
if maxlen > 0 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'event', state, 'job', id,
    'attempt', attempts)
end
return state

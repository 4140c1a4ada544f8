-- fail: active -> retrying | failed | cancelled (see redkit/jobs/states.py): the attempt
-- raised, timed out, or was cancelled. With attempts left (and retryable, and no cancel
-- request) the job waits out an exponential backoff in the delayed set; otherwise it goes to
-- the failed set (the dead letter), or to the cancelled set after a cancel request; that set
-- is then trimmed to its bounds.
-- KEYS[1]: active   KEYS[2]: delayed   KEYS[3]: failed   KEYS[4]: events   KEYS[5]: wake list
-- KEYS[6]: cancelled
-- ARGV[1]: job hash prefix   ARGV[2]: done-list prefix   ARGV[3]: worker id   ARGV[4]: job id
-- ARGV[5]: attempt   ARGV[6]: error text   ARGV[7]: traceback text
-- ARGV[8]: retryable (1/0)   ARGV[9]: jitter factor (e.g. 0.8-1.2, chosen by the caller)
-- ARGV[10]: backoff cap (ms)   ARGV[11]: failed (and cancelled) jobs to keep, per set
-- ARGV[12]: their max age (ms)
-- ARGV[13]: events MAXLEN (0: none)
-- A failed job's hash also gets "search": its function and error head, lower-cased, which
-- search_failed.lua matches (bounded with the job: trimmed or expired with it).
-- Returns: the new state ("retrying", "failed" or "cancelled"), or false if the job is no
--   longer this worker's attempt (nothing changed).
-- Backoff before attempt a+1: min(cap, backoff * 2^(a-1)) * jitter.
-- @include _trim

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A finished set is scored in ms with the microseconds as a fraction: two jobs finished in
-- one ms still list (and trim) newest first, not by id.
local order = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
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
  if state == 'failed' then
    local fn = redis.call('HGET', jkey, 'fn') or ''
    redis.call('HSET', jkey, 'search', string.lower(fn .. '\n' .. string.sub(ARGV[6], 1, 300)))
  end
  local age = tonumber(ARGV[12])
  local dead = KEYS[3]
  if state == 'cancelled' then dead = KEYS[6] end
  redis.call('PEXPIRE', jkey, age)
  redis.call('ZADD', dead, order, id)
  if f[7] then
    local dkey = done_prefix .. id
    for _ = 1, math.min(tonumber(f[7]), 100) do redis.call('RPUSH', dkey, state) end
    redis.call('PEXPIRE', dkey, 60000)
    redis.call('HDEL', jkey, 'notify')
  end
  trim(dead, prefix, tonumber(ARGV[11]), age, now)
end
if maxlen > 0 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'event', state, 'job', id,
    'attempt', attempts)
end
return state

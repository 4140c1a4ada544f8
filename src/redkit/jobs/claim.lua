-- claim: waiting -> active for up to N jobs, after two housekeeping transitions
-- (see redkit/jobs/states.py): active jobs whose lease expired (their worker died or stalled)
-- go back to waiting with the attempt counted, or to failed when out of attempts (cancelled,
-- if a cancel was requested); delayed and
-- retrying jobs that are due become waiting. Nothing is handed out while the queue is paused.
-- KEYS[1]: waiting   KEYS[2]: delayed   KEYS[3]: active   KEYS[4]: failed
-- KEYS[5]: paused flag   KEYS[6]: sequence counter   KEYS[7]: events   KEYS[8]: wake list
-- KEYS[9]: cancelled
-- ARGV[1]: job hash prefix   ARGV[2]: done-list prefix   ARGV[3]: worker id
-- ARGV[4]: N (max jobs to claim)   ARGV[5]: lease (ms)   ARGV[6]: events MAXLEN (0: none)
-- ARGV[7]: failed (and cancelled) jobs to keep, per set   ARGV[8]: their max age (ms)
-- Returns: {ms until the next delayed job is due or a lease ends (-1: none), then per
--   claimed job: id, function, payload, attempts (this one), max_attempts, timeout_ms,
--   traceparent (its enqueuer's trace context, or false)}
-- Order: priority (higher first), then FIFO, by the waiting set's score.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A finished set is scored in ms with the microseconds as a fraction: two jobs finished in
-- one ms still list (and trim) newest first, not by id.
local order = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local prefix, done_prefix, worker = ARGV[1], ARGV[2], ARGV[3]
local n, lease, maxlen = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local keep_failed, failed_age = tonumber(ARGV[7]), tonumber(ARGV[8])

-- @include _trim

local function event(name, id)
  if maxlen > 0 then
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', maxlen, '*', 'event', name, 'job', id)
  end
end

local function to_waiting(id, jkey, prio)
  local seq = redis.call('INCR', KEYS[6])
  redis.call('ZADD', KEYS[1], (1000 - prio) * 1000000000000 + seq % 1000000000000, id)
  redis.call('HSET', jkey, 'state', 'waiting')
end

-- 1. Expired leases (BullMQ's stalled-job check), at most 100 per call.
local failed_any, cancelled_any = false, false
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  local jkey = prefix .. id
  redis.call('ZREM', KEYS[3], id)
  local f = redis.call('HMGET', jkey, 'attempts', 'max', 'prio', 'notify', 'cancel')
  if f[1] then
    redis.call('HDEL', jkey, 'owner')
    if f[5] == '1' or tonumber(f[1]) >= tonumber(f[2]) then
      local state = 'failed'
      if f[5] == '1' then state = 'cancelled' end
      redis.call('HSET', jkey, 'state', state, 'finished', now, 'error',
        'the lease expired: the worker died or stalled (attempt ' .. f[1] .. ' of ' .. f[2] .. ')')
      redis.call('PEXPIRE', jkey, failed_age)
      if state == 'cancelled' then
        redis.call('ZADD', KEYS[9], order, id)
        cancelled_any = true
      else
        redis.call('ZADD', KEYS[4], order, id)
        failed_any = true
      end
      event(state, id)
      if f[4] then
        local dkey = done_prefix .. id
        for _ = 1, math.min(tonumber(f[4]), 100) do redis.call('RPUSH', dkey, state) end
        redis.call('PEXPIRE', dkey, 60000)
        redis.call('HDEL', jkey, 'notify')
      end
    else
      to_waiting(id, jkey, tonumber(f[3]))
      event('stalled', id)
    end
  end
end
-- Bounded: each set keeps its newest keep_failed, none older than failed_age.
if failed_any then trim(KEYS[4], prefix, keep_failed, failed_age, now) end
if cancelled_any then trim(KEYS[9], prefix, keep_failed, failed_age, now) end

-- 2. Delayed and retrying jobs that are due, at most 1000 per call.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  local jkey = prefix .. id
  local prio = redis.call('HGET', jkey, 'prio')
  if prio then to_waiting(id, jkey, tonumber(prio)) end
end

-- 3. Claim.
local out = {-1}
if n > 0 and redis.call('EXISTS', KEYS[5]) == 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], n)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local jkey = prefix .. id
    local f = redis.call('HMGET', jkey, 'fn', 'payload', 'attempts', 'max', 'timeout', 'tp')
    if f[1] then
      local attempt = tonumber(f[3]) + 1
      redis.call('HSET', jkey, 'state', 'active', 'attempts', attempt, 'owner', worker,
        'started', now)
      redis.call('ZADD', KEYS[3], now + lease, id)
      event('active', id)
      out[#out + 1] = id
      out[#out + 1] = f[1]
      out[#out + 1] = f[2]
      out[#out + 1] = attempt
      out[#out + 1] = f[4]
      out[#out + 1] = f[5]
      out[#out + 1] = f[6]
    end
  end
  -- Nothing left to hand out: stale wake tokens would only cause empty claims.
  if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[8]) end
end

local next_at = nil
local d = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if d[2] then next_at = tonumber(d[2]) end
local a = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if a[2] and (next_at == nil or tonumber(a[2]) < next_at) then next_at = tonumber(a[2]) end
if next_at then out[1] = math.max(0, next_at - now) end
return out

-- complete: active -> completed for a batch of jobs (see redkit/jobs/states.py); then trims
-- the completed set to its bounds, deleting the trimmed jobs' hashes.
-- KEYS[1]: active   KEYS[2]: completed   KEYS[3]: events
-- ARGV[1]: job hash prefix   ARGV[2]: done-list prefix   ARGV[3]: worker id
-- ARGV[4]: completed jobs to keep   ARGV[5]: completed jobs' max age (ms)
-- ARGV[6]: events MAXLEN (0: none)   ARGV[7]: N, then 3 values per job: id, attempt, result
-- Returns: one entry per job: 1 completed, 0 refused (the job is no longer this worker's
--   attempt: its lease expired and it was handed out again, or it was removed).
-- Bounded: the completed set is trimmed by count and age here; each completed job hash
-- also gets the max age as its TTL, so nothing outlives the bound even untrimmed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A finished set is scored in ms with the microseconds as a fraction: two jobs finished in
-- one ms still list (and trim) newest first, not by id.
local order = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local prefix, done_prefix, worker = ARGV[1], ARGV[2], ARGV[3]
local keep, age, maxlen, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])
local out = {}
local any = false
for i = 0, n - 1 do
  local b = 8 + i * 3
  local id = ARGV[b]
  local jkey = prefix .. id
  local f = redis.call('HMGET', jkey, 'state', 'owner', 'attempts', 'notify')
  if f[1] == 'active' and f[2] == worker and f[3] == ARGV[b + 1] then
    redis.call('HSET', jkey, 'state', 'completed', 'result', ARGV[b + 2], 'finished', now)
    redis.call('HDEL', jkey, 'owner')
    redis.call('PEXPIRE', jkey, age)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], order, id)
    if maxlen > 0 then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'event', 'completed', 'job', id)
    end
    if f[4] then
      local dkey = done_prefix .. id
      for _ = 1, math.min(tonumber(f[4]), 100) do redis.call('RPUSH', dkey, 'completed') end
      redis.call('PEXPIRE', dkey, 60000)
      redis.call('HDEL', jkey, 'notify')
    end
    out[#out + 1] = 1
    any = true
  else
    out[#out + 1] = 0
  end
end
if any then
  local count = redis.call('ZCARD', KEYS[2])
  if count > keep then
    local old = redis.call('ZRANGE', KEYS[2], 0, math.min(count - keep, 1000) - 1)
    for _, id in ipairs(old) do redis.call('DEL', prefix .. id) end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, #old - 1)
  end
  local aged = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - age, 'LIMIT', 0, 100)
  for _, id in ipairs(aged) do
    redis.call('DEL', prefix .. id)
    redis.call('ZREM', KEYS[2], id)
  end
end
return out

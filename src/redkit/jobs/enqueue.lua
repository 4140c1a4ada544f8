-- enqueue: new job(s) -> waiting | delayed (see redkit/jobs/states.py). Also enqueue_many.
-- KEYS[1]: waiting zset   KEYS[2]: delayed zset   KEYS[3]: sequence counter
-- KEYS[4]: events stream  KEYS[5]: wake list (workers block on it)
-- ARGV[1]: job hash prefix ("<queue>:job:")   ARGV[2]: once-key prefix ("<queue>:once:")
-- ARGV[3]: events MAXLEN (0: no events)       ARGV[4]: once-key TTL (ms)
-- ARGV[5]: number of jobs N
-- ARGV[6]: the enqueuing span's W3C traceparent for every job of the call ("" for none;
--          at most 128 bytes, else not stored: redkit.otel reads it back as untrusted)
-- ARGV[7...]: 10 values per job:
--   id, function, payload (JSON), priority, delay_ms, max_attempts, backoff_ms, timeout_ms,
--   once (a unique tick name, or "" for none), fresh ("1": the id is a new random one that
--   no job can have, so the idempotency check is skipped)
-- Returns: a flat array, 2 entries per job: created (1 new, 0 already there), state.
-- A job id that exists (in any state, until trimmed) is not queued again: enqueue is
-- idempotent by id. A once-name is refused for its TTL even after its job is trimmed
-- (cron ticks use it). Durable: waiting/delayed zsets, job hashes, the counter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, once_prefix = ARGV[1], ARGV[2]
local maxlen, once_ttl, n = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local tp = ARGV[6]
if #tp > 128 then tp = '' end
local seq = redis.call('INCRBY', KEYS[3], n) - n
local out = {}
local woke = 0
for i = 0, n - 1 do
  local b = 7 + i * 10
  local id, fn, payload = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local prio, delay = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local once = ARGV[b + 8]
  local jkey = prefix .. id
  local state
  local created = 0
  if once ~= '' and not redis.call('SET', once_prefix .. once, id, 'NX', 'PX', once_ttl) then
    state = redis.call('HGET', jkey, 'state') or 'removed'
  else
    if ARGV[b + 9] ~= '1' then
      state = redis.call('HGET', jkey, 'state')
    end
    if not state then
      seq = seq + 1
      if delay > 0 then
        state = 'delayed'
        redis.call('ZADD', KEYS[2], now + delay, id)
      else
        state = 'waiting'
        redis.call('ZADD', KEYS[1], (1000 - prio) * 1000000000000 + seq % 1000000000000, id)
        woke = woke + 1
      end
      redis.call('HSET', jkey, 'fn', fn, 'payload', payload, 'state', state, 'prio', prio,
        'attempts', 0, 'max', ARGV[b + 5], 'backoff', ARGV[b + 6], 'timeout', ARGV[b + 7],
        'created', now, 'due', now + delay)
      if tp ~= '' then redis.call('HSET', jkey, 'tp', tp) end
      if maxlen > 0 then
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', maxlen, '*', 'event', 'enqueued', 'job', id)
      end
      created = 1
    end
  end
  out[#out + 1] = created
  out[#out + 1] = state
end
-- One wake token per new waiting job, at most 64 in the list (bounded): each wakes one idle
-- worker; a worker that finds nothing simply blocks again.
if woke > 0 then
  local room = 64 - redis.call('LLEN', KEYS[5])
  if room > 0 then
    local tokens = {}
    for i = 1, math.min(woke, room) do tokens[i] = '1' end
    redis.call('RPUSH', KEYS[5], unpack(tokens))
  end
end
return out

-- Store a computed value, index it under its tags, release the lock and wake the waiters.
-- KEYS[1]: the entry (PX = ttl + stale windows)
-- KEYS[2]: the single-flight lock
-- KEYS[3]: the notify list (PX = ARGV[8] when pushed)
-- KEYS[4]: the shard's recent invalidations (zset tag -> us; trimmed, PX = keep time)
-- KEYS[5]: (only when the value has tags) the shard's tag index: zset tag name -> expiry
--          ms of its longest-lived entry, for the dashboard's "entries per tag" (bounded:
--          trimmed of ended tags on every tagged write, at most TAG_INDEX_CAP members, the
--          soonest-ending evicted first; PX >= its longest-lived member)
-- KEYS[6..]: one tag set per tag (zset entry key -> expiry ms; trimmed on every write,
--            PX >= its longest-lived member)
-- ARGV[1]: the payload; ARGV[2]: ttl ms; ARGV[3]: stale-while-revalidate ms;
-- ARGV[4]: stale-if-error ms; ARGV[5]: compute time (delta) ms;
-- ARGV[6]: the lock token, or "" for a plain set;
-- ARGV[7]: server time in microseconds when the computation started (0: no check);
-- ARGV[8]: notify list lifetime ms; ARGV[9..]: tag names
-- Returns: 1 if stored, 0 if not (a tag was invalidated after the computation started)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ntags = math.max(0, #KEYS - 5)
local TAG_INDEX_CAP = 10000
local started = tonumber(ARGV[7])
local stored = 1
if started > 0 then
  -- The value may have been computed from data that an invalidation declared stale.
  for i = 1, ntags do
    local at = redis.call('ZSCORE', KEYS[4], ARGV[8 + i])
    if at and tonumber(at) >= started then
      stored = 0
      break
    end
  end
end
if stored == 1 then
  local ttl, swr, sie = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local life = ttl + swr + sie
  local head = string.format('%d:%d:%d:%d|', now + ttl, now, tonumber(ARGV[5]), swr)
  redis.call('SET', KEYS[1], head .. ARGV[1], 'PX', life)
  local added = 0
  for i = 1, ntags do
    local tk = KEYS[5 + i]
    redis.call('ZREMRANGEBYSCORE', tk, '-inf', now)
    redis.call('ZADD', tk, now + life, KEYS[1])
    if redis.call('PTTL', tk) < life then
      redis.call('PEXPIRE', tk, life)
    end
    added = added + redis.call('ZADD', KEYS[5], 'GT', now + life, ARGV[8 + i])
  end
  if ntags > 0 then
    local index = KEYS[5]
    redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
    if added > 0 then
      local size = redis.call('ZCARD', index)
      if size > TAG_INDEX_CAP then
        redis.call('ZREMRANGEBYRANK', index, 0, size - TAG_INDEX_CAP - 1)
      end
    end
    if redis.call('PTTL', index) < life then
      redis.call('PEXPIRE', index, life)
    end
  end
end
local waiters = tonumber(redis.call('HGET', KEYS[2], 'waiters') or '0')
for _ = 1, math.min(waiters, 10000) do
  redis.call('RPUSH', KEYS[3], '1')
end
if waiters > 0 then
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[2], 'token') == ARGV[6] then
  redis.call('DEL', KEYS[2])
elseif waiters > 0 then
  -- Someone else holds the lock now; its waiters were woken by this value.
  redis.call('HSET', KEYS[2], 'waiters', 0)
end
return stored

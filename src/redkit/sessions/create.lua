-- Create a session and add it to its user's index; prune the index and evict first.
-- KEYS[1]: the store's base in the bucket, a prefix never written itself: '<ns>:{sess:<bucket>}',
-- or '<ns>:{sess:<bucket>}:n:<store name>' for a store not named 'default';
-- session keys are '<base>:s:<hash>'
-- KEYS[2]: the new session's hash, '<base>:s:<sha256 of the token>'
-- KEYS[3]: the user's index '<base>:u:<user id>': sorted set, token hash -> absolute expiry ms
-- ARGV[1]: token hash; ARGV[2]: idle ttl ms; ARGV[3]: absolute ttl ms
-- ARGV[4]: max sessions per user (0: no limit); ARGV[5]: id prefix shown by list()
-- ARGV[6]: meta, JSON [user id, ip, user agent]; ARGV[7]: data, JSON {field: JSON text}
-- Returns: {now ms, number of older sessions evicted}
local base, session, index = KEYS[1], KEYS[2], KEYS[3]
local idle, absolute, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function ms(x) return string.format('%.0f', x) end

-- Prune: entries past their absolute expiry by score, then entries whose session key is gone
-- (idle expiry, eviction). The index never holds more than the live sessions plus this one.
redis.call('ZREMRANGEBYSCORE', index, '-inf', ms(now))
for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if redis.call('EXISTS', base .. ':s:' .. member) == 0 then
    redis.call('ZREM', index, member)
  end
end

-- max_per_user: the lowest score is the earliest absolute expiry, i.e. the oldest session.
local evicted = 0
if limit > 0 then
  local excess = redis.call('ZCARD', index) - limit + 1
  if excess > 0 then
    for _, member in ipairs(redis.call('ZRANGE', index, 0, excess - 1)) do
      redis.call('DEL', base .. ':s:' .. member)
      redis.call('ZREM', index, member)
      evicted = evicted + 1
    end
  end
end

local deadline = now + absolute
redis.call('DEL', session)
redis.call('HSET', session, 'l', ms(now), 'a', ms(deadline), 'c', ms(now), 'p', ARGV[5],
  'm', ARGV[6], 'd', ARGV[7])
-- Bounded: the session dies at the earlier of its idle and absolute deadlines.
redis.call('PEXPIREAT', session, ms(math.min(now + idle, deadline)))
redis.call('ZADD', index, ms(deadline), ARGV[1])
-- Bounded: the index lives as long as its longest-lived entry.
local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', index, ms(tonumber(last[2])))
return {now, evicted}

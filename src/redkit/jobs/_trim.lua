-- _trim (pasted in by -- @include _trim): trim(zset, prefix, keep, age, now) bounds a set of
-- finished jobs (failed or cancelled; score: finish time in ms): it keeps the newest `keep`,
-- none older than `age` ms, and deletes the trimmed jobs' hashes. Bounded work per call:
-- at most 1000 by count and 100 by age (the hashes also carry `age` as their TTL).
local function trim(zset, prefix, keep, age, now)
  local count = redis.call('ZCARD', zset)
  if count > keep then
    local old = redis.call('ZRANGE', zset, 0, math.min(count - keep, 1000) - 1)
    for _, old_id in ipairs(old) do redis.call('DEL', prefix .. old_id) end
    redis.call('ZREMRANGEBYRANK', zset, 0, #old - 1)
  end
  local aged = redis.call('ZRANGEBYSCORE', zset, '-inf', now - age, 'LIMIT', 0, 100)
  for _, old_id in ipairs(aged) do
    redis.call('DEL', prefix .. old_id)
    redis.call('ZREM', zset, old_id)
  end
end

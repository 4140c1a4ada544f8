-- Live entries per tag in one shard, for the dashboard (reads only).
-- KEYS[1]: the shard's tag index (zset tag name -> expiry ms of its longest-lived entry)
-- ARGV[1]: the shard's tag-set key prefix (``<shard base>t:``); a tag's set is that prefix
--          and the tag name (same hash tag as KEYS[1], so same slot and node)
-- ARGV[2]: at most this many tags (the latest-ending first)
-- Returns: a flat array {tag, live entries, tag, live entries, ...}
-- Bounded: ARGV[2] ZCOUNTs, each O(log n); the tag sets are not in KEYS because which ones
-- to read is what the index says (they share the shard's hash tag, like invalidate's entries).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tags = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, tag in ipairs(tags) do
  local live = redis.call('ZCOUNT', ARGV[1] .. tag, '(' .. now, '+inf')
  if live > 0 then
    out[#out + 1] = tag
    out[#out + 1] = live
  end
end
return out

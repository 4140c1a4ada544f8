-- The live sessions of one user (pruning the index of dead entries on the way).
-- KEYS[1]: the store's base in the bucket, a prefix never written itself: '<ns>:{sess:<bucket>}',
-- or '<ns>:{sess:<bucket>}:n:<store name>' for a store not named 'default'
-- KEYS[2]: the user's index '<base>:u:<user id>'
-- ARGV: none
-- Returns: {now ms, {id prefix, meta JSON, created ms, last seen ms, absolute ms}, ...}:
-- one entry per live session
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
local out = {now}
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local row = redis.call('HMGET', KEYS[1] .. ':s:' .. member, 'p', 'm', 'c', 'l', 'a')
  if row[1] then
    out[#out + 1] = row
  else
    redis.call('ZREM', KEYS[2], member)
  end
end
return out

-- End the one live session of a user whose id prefix starts with the given text.
-- KEYS[1]: the store's base in the bucket, a prefix never written itself: '<ns>:{sess:<bucket>}',
-- or '<ns>:{sess:<bucket>}:n:<store name>' for a store not named 'default'
-- KEYS[2]: the user's index '<base>:u:<user id>': sorted set, token hash -> absolute expiry ms
-- ARGV[1]: the prefix asked for (already checked: id characters only, not longer than the
-- stored id prefix)
-- Returns: {0} when no live session of the user matches; {n} (n > 1) when n match, and then
-- nothing is ended; {1, {id prefix, meta JSON, created ms, last seen ms, absolute ms}} when
-- exactly one matched and was ended
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Only the user's own index is searched: another user's sessions are never candidates.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
local wanted = ARGV[1]
local found, row, member = 0, nil, nil
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local fields = redis.call('HMGET', KEYS[1] .. ':s:' .. m, 'p', 'm', 'c', 'l', 'a')
  if not fields[1] then
    redis.call('ZREM', KEYS[2], m)  -- idle-expired or evicted: prune it on the way
  elseif string.sub(fields[1], 1, #wanted) == wanted then
    found = found + 1
    row, member = fields, m
  end
end
if found ~= 1 then return {found} end
redis.call('DEL', KEYS[1] .. ':s:' .. member)
redis.call('ZREM', KEYS[2], member)
return {1, row}

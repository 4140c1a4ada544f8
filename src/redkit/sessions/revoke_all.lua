-- End every session of one user and drop their cached permissions, atomically.
-- KEYS[1]: the store's base in the bucket, a prefix never written itself: '<ns>:{sess:<bucket>}',
-- or '<ns>:{sess:<bucket>}:n:<store name>' for a store not named 'default'
-- KEYS[2]: the user's index '<base>:u:<user id>'; KEYS[3]: their permissions '<base>:p:<user id>'
-- ARGV: none
-- Returns: the number of live sessions ended
local ended = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  ended = ended + redis.call('DEL', KEYS[1] .. ':s:' .. member)
end
redis.call('DEL', KEYS[2], KEYS[3])
return ended

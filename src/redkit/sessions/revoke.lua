-- End one session and drop it from its user's index.
-- KEYS[1]: the store's base in the bucket, a prefix never written itself: '<ns>:{sess:<bucket>}',
-- or '<ns>:{sess:<bucket>}:n:<store name>' for a store not named 'default'
-- KEYS[2]: the session hash '<base>:s:<token hash>'
-- ARGV[1]: the token hash
-- Returns: 1 if a live session was ended, 0 if there was none
local meta = redis.call('HGET', KEYS[2], 'm')
if not meta then return 0 end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1] .. ':u:' .. cjson.decode(meta)[1], ARGV[1])
return 1

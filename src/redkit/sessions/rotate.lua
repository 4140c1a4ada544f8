-- Give a live session a new ID: the hash moves to the new token's key, the old one is gone.
-- KEYS[1]: the store's base in the bucket, a prefix never written itself: '<ns>:{sess:<bucket>}',
-- or '<ns>:{sess:<bucket>}:n:<store name>' for a store not named 'default'
-- KEYS[2]: the old session hash '<base>:s:<old hash>'; KEYS[3]: the new '<base>:s:<new hash>'
-- ARGV[1]: old token hash; ARGV[2]: new token hash; ARGV[3]: new id prefix; ARGV[4]: idle ms
-- Returns: nil when there is no live session, else {last seen ms, absolute deadline ms,
-- created ms, meta JSON, data JSON}
local f = redis.call('HMGET', KEYS[2], 'l', 'a', 'c', 'm', 'd')
local deadline = tonumber(f[2])
if not deadline or not f[4] then return nil end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= deadline then
  redis.call('DEL', KEYS[2])
  return nil
end
-- Same created/absolute deadline: rotation never extends the absolute timeout.
redis.call('RENAME', KEYS[2], KEYS[3])
local stamp = string.format('%.0f', now)
redis.call('HSET', KEYS[3], 'p', ARGV[3], 'l', stamp)
redis.call('PEXPIREAT', KEYS[3], string.format('%.0f', math.min(now + tonumber(ARGV[4]), deadline)))
local index = KEYS[1] .. ':u:' .. cjson.decode(f[4])[1]
redis.call('ZREM', index, ARGV[1])
-- The index already lives until at least this deadline (it held the old entry).
redis.call('ZADD', index, f[2], ARGV[2])
return {stamp, f[2], f[3], f[4], f[5]}

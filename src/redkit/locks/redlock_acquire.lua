-- Redlock, on one of the independent masters: take the key if it is free.
-- KEYS[1]: owner (string holding the token, PX = ttl; bounded by its TTL)
-- ARGV[1]: token
-- ARGV[2]: ttl in ms
-- Returns: 1 if taken, 0 if another token holds it
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0

-- Redlock, on one of the independent masters: delete the key if this token holds it.
-- KEYS[1]: owner (string holding the token)
-- ARGV[1]: token
-- Returns: 1 if deleted, 0 if the token did not hold it
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

-- Reset a held lock's remaining time to ttl, if this token still holds it.
-- KEYS[1]: owner (string: holder's token)
-- ARGV[1]: token
-- ARGV[2]: ttl in ms
-- Returns: 1 if extended; 0 if the token no longer holds the lock
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1

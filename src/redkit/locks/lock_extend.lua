-- Reset a held lock's remaining time to ttl, if this token still holds it.
-- KEYS[1]: owner (string: holder's token)
-- KEYS[2], KEYS[3] (optional; single-node servers only): the namespace's lock registry, a
--          zset and a hash (see _registry.lua; bounded there)
-- ARGV[1]: token
-- ARGV[2]: ttl in ms
-- Returns: 1 if extended; 0 if the token no longer holds the lock
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local REG, REG_SINCE = KEYS[2], KEYS[3]
-- @include _registry
if REG then
  reg_hold(KEYS[1], reg_ms(), tonumber(ARGV[2]), false)
end
return 1

-- Reset a held lock's remaining time to ttl, if this token still holds it.
-- KEYS[1]: owner (string: '<holder's token>@<acquired ms>' or the bare token, see _owner)
-- ARGV[1]: token
-- ARGV[2]: ttl in ms
-- Returns: 1 if extended; 0 if the token no longer holds the lock
-- holds() of _owner, inlined. PEXPIRE keeps the value: the acquisition time stays that of the
-- acquisition, not of a renewal.
local owner, token = redis.call('GET', KEYS[1]), ARGV[1]
if owner ~= token and (not owner or string.sub(owner, 1, #token + 1) ~= token .. '@') then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1

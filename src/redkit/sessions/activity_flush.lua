-- Add one process's session activity to its store's per-minute buckets.
-- KEYS[1]: the store's activity base '<ns>:{sessact:<store name>}', a prefix never written
--          itself; the buckets of server minute m (ms // 60000) are
--          '<base>:h:<m>': HyperLogLog of the sessions used in m (their hashed ids, see store.py)
--          '<base>:c:<m>': hash {created, revoked}: sessions created and revoked in m
-- ARGV[1]: sessions created; ARGV[2]: sessions revoked; ARGV[3]: minutes a bucket is kept
-- ARGV[4], ARGV[5], ...: hashed ids of the sessions used (none: only the counts)
-- Returns: the server minute written
-- Bounded: each bucket expires ARGV[3] minutes after its minute ends, so at most ARGV[3] + 1
-- of each kind exist; a HyperLogLog never holds more than 12 KB, whatever it counts.
local t = redis.call('TIME')
local minute = math.floor(tonumber(t[1]) / 60)
local expiry = (minute + 1 + tonumber(ARGV[3])) * 60000
local hll = KEYS[1] .. ':h:' .. minute
-- PFADD in slices: unpack() of too many values overflows Lua's C stack.
for i = 4, #ARGV, 1000 do
  redis.call('PFADD', hll, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if #ARGV >= 4 then
  redis.call('PEXPIREAT', hll, expiry)
end
local created, revoked = tonumber(ARGV[1]), tonumber(ARGV[2])
if created > 0 or revoked > 0 then
  local counts = KEYS[1] .. ':c:' .. minute
  if created > 0 then redis.call('HINCRBY', counts, 'created', created) end
  if revoked > 0 then redis.call('HINCRBY', counts, 'revoked', revoked) end
  redis.call('PEXPIREAT', counts, expiry)
end
return minute

-- Read a store's session activity over its last minutes (nothing is written but PFCOUNT's
-- cached cardinality inside the HyperLogLogs).
-- KEYS[1]: the store's activity base '<ns>:{sessact:<store name>}' (see activity_flush.lua);
--          the buckets read are '<base>:h:<m>' and '<base>:c:<m>', all on the base's slot
-- ARGV[1]: minutes N: the server's current minute and the N - 1 before it
-- Returns: {distinct sessions used in those minutes (HyperLogLog union: ~0.81% standard
--          error), sessions created in them, sessions revoked in them}
local t = redis.call('TIME')
local minute = math.floor(tonumber(t[1]) / 60)
local hlls = {}
local created, revoked = 0, 0
for m = minute - tonumber(ARGV[1]) + 1, minute do
  hlls[#hlls + 1] = KEYS[1] .. ':h:' .. m
  local c = redis.call('HMGET', KEYS[1] .. ':c:' .. m, 'created', 'revoked')
  created = created + (tonumber(c[1]) or 0)
  revoked = revoked + (tonumber(c[2]) or 0)
end
return {redis.call('PFCOUNT', unpack(hlls)), created, revoked}

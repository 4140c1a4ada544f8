-- Free a lock whoever holds it (an operator's `redkit locks release NAME --force`).
-- KEYS[1]: owner (string: holder's token)
-- KEYS[2]: queue (zset waiter token -> arrival ms)
-- KEYS[3]: wake prefix: waiter W blocks on the list KEYS[3]..':'..W (same hash tag)
-- KEYS[4], KEYS[5] (optional; single-node servers only): the namespace's lock registry, a
--          zset and a hash (see _registry.lua; bounded there)
-- ARGV[1]: waiter lease in ms (lifetime of the wake signal)
-- Returns: 1 if a holder was removed, 0 if the lock was free
local REG, REG_SINCE = KEYS[4], KEYS[5]
-- @include _registry
local removed = redis.call('DEL', KEYS[1])
reg_free(KEYS[1])
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if head then
  local list = KEYS[3] .. ':' .. head
  redis.call('LPUSH', list, '1')
  redis.call('LTRIM', list, 0, 0)
  redis.call('PEXPIRE', list, ARGV[1])
end
return removed

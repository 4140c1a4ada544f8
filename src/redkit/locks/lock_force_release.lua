-- Free a lock whoever holds it (an operator's `redkit locks release NAME --force`).
-- KEYS[1]: owner (string: holder's token)
-- KEYS[2]: queue (zset waiter token -> arrival ms)
-- KEYS[3]: wake prefix: waiter W blocks on the list KEYS[3]..':'..W (same hash tag)
-- ARGV[1]: waiter lease in ms (lifetime of the wake signal)
-- Returns: 1 if a holder was removed, 0 if the lock was free
local removed = redis.call('DEL', KEYS[1])
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if head then
  local list = KEYS[3] .. ':' .. head
  redis.call('LPUSH', list, '1')
  redis.call('LTRIM', list, 0, 0)
  redis.call('PEXPIRE', list, ARGV[1])
end
return removed

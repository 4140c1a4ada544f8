-- Release a lock if this token still holds it, handing it straight to the first live waiter.
-- KEYS[1]: owner (string: '<holder's token>@<acquired ms>' or the bare token, see _owner;
--          PX = the holder's ttl)
-- KEYS[2]: fence (the last fencing token, no TTL: tokens must keep increasing)
-- KEYS[3]: queue (zset waiter token -> arrival ms)
-- KEYS[4]: deadlines (zset waiter token -> ms after which the waiter is presumed gone)
-- KEYS[5]: wake prefix: waiter W blocks on the list KEYS[5]..':'..W (same hash tag)
-- ARGV[1]: token
-- ARGV[2]: waiter lease in ms (lifetime of the wake list, so it is bounded)
-- Returns: 0 if the token did not hold the lock (nothing is touched then); 1 if released and
--          left free; 2 if handed over to a waiter (which holds it now)
--
-- Direct hand-off: the next waiter becomes the owner here, with its own ttl (the digits after
-- the last '.' of its token) and the next fencing token, and that fencing token is pushed
-- onto its wake list, so its BLPOP returns holding the lock: no acquire round trip after the
-- wake, and nobody else can slip in between. A waiter that died before its deadline passed
-- holds the lock until its ttl ends, like a holder that dies right after acquiring.
-- holds() of _owner, inlined: the usual release defines no function.
local owner, token = redis.call('GET', KEYS[1]), ARGV[1]
if owner ~= token and (not owner or string.sub(owner, 1, #token + 1) ~= token .. '@') then
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1])
  return 1  -- nobody waits
end
-- @include _owner
-- @include _fence
-- @include _waiters
prune_gone(server_ms())
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if head and hand_over(head, ARGV[2]) then
  return 2
end
redis.call('DEL', KEYS[1])
if head then
  wake(head, ARGV[2])  -- a waiter without a ttl in its token (an older client)
end
return 1

-- Read a lock's state for an operator (nothing is written).
-- KEYS[1]: owner (string: '<holder's token>@<server ms it was acquired>', or the bare token of
--          an older client; PX = its lease)
-- KEYS[2]: fence (the last fencing token)
-- KEYS[3]: queue (zset waiter token -> arrival ms)
-- ARGV: none
-- Returns: {the owner value or false, ms left of its lease (-2: free), the latest fencing
--          token (0 if none), queued waiters, the server's time in ms}
local t = redis.call('TIME')
return {
  redis.call('GET', KEYS[1]),
  redis.call('PTTL', KEYS[1]),
  tonumber(redis.call('GET', KEYS[2]) or 0),
  redis.call('ZCARD', KEYS[3]),
  tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
}

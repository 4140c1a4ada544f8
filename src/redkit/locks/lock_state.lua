-- Read a lock's state for an operator (nothing is written).
-- KEYS[1]: owner (string: the holder's token, PX = its lease)
-- KEYS[2]: fence (the last fencing token)
-- KEYS[3]: queue (zset waiter token -> arrival ms)
-- ARGV: none
-- Returns: {the holder's token or false, ms left of its lease (-2: free), the latest fencing
--          token (0 if none), queued waiters}
return {
  redis.call('GET', KEYS[1]),
  redis.call('PTTL', KEYS[1]),
  tonumber(redis.call('GET', KEYS[2]) or 0),
  redis.call('ZCARD', KEYS[3]),
}

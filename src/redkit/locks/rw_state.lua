-- Read a read-write lock's state (nothing is written).
-- KEYS[1]: readers (zset reader token -> lease end ms)
-- KEYS[2]: writer (string: '<writer's token>@<server ms it was acquired>', or the bare
--          token of an older client, see _owner; PX = its lease)
-- KEYS[3]: fence (the last write lease's fencing token)
-- KEYS[4]: queue (zset waiter token -> arrival)
-- ARGV: none
-- Returns: {live read leases, ms left of the write lease (-2 if no writer holds), ms until the
--          longest live read lease ends (0 if none), the latest writer's fencing token (0 if
--          none yet), queued waiters, ms the writer has held it (-1: no writer, or one whose
--          value carries no acquisition time)}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local readers = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local held = -1
local stamp = string.match(redis.call('GET', KEYS[2]) or '', '@(%d+)$')
if stamp then
  held = math.max(now - tonumber(stamp), 0)
end
local longest = 0
if readers > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  longest = tonumber(last[2]) - now
end
return {
  readers,
  redis.call('PTTL', KEYS[2]),
  longest,
  tonumber(redis.call('GET', KEYS[3]) or 0),
  redis.call('ZCARD', KEYS[4]),
  held,
}

-- The next fencing token, shared by lock_acquire, lock_release, lock_leave and rw_acquire
-- (pasted in where a script says `-- @include _fence`; see redkit.scripts). A script that
-- also includes _waiters includes this before it: the hand-over there takes a token too.

-- Store in the counter `key` and return the next fencing token: one past the last token, or
-- the server's clock in microseconds where that is larger. A counter alone would repeat after
-- a failover: a promoted replica may not have received the master's last increments, and its
-- count starts again below tokens already given. The clock does not go back with a failover:
-- each token is the old master's clock when it was given (or a few past it, had tokens come
-- faster than one a microsecond: scripts run one at a time, each for microseconds), and by
-- the time a replica is promoted its clock is past that, provided the two clocks differ by
-- less than the time from the last acquisition on the old master to the first on the new one
-- (at least the failover's detection delay: NTP keeps clocks within milliseconds, a failover
-- takes seconds). Where the clock is behind the last token (it stepped back), the count goes
-- on from the token.
-- Exact: microseconds since 1970 stay below 2^53 (Lua numbers are doubles) until the year
-- 2255, and a whole number SET from Lua is written in plain digits (Redis 6.2, 7.0, Valkey).
-- One write in the common case (SET ... GET, Redis >= 6.2): the clock is ahead of the last
-- token, which is only read back to check that.
-- `t`: a TIME reply the script already has (optional: one call fewer on the fast path).
local function next_fence(key, t)
  t = t or redis.call('TIME')
  local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('SET', key, fence, 'GET') or 0)
  if last >= fence then
    fence = last + 1
    redis.call('SET', key, fence)
  end
  return fence
end

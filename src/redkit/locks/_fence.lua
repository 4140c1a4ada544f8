-- The next fencing token, shared by lock_acquire, lock_release, lock_leave and rw_acquire
-- (pasted in where a script says `-- @include _fence`; see redkit.scripts). A script that
-- also includes _waiters includes this before it: the hand-over there takes a token too.

-- Store in the counter `key` and return the next fencing token: one past the last token, or
-- the server's clock in microseconds where that is larger. A counter alone would repeat after
-- a failover: a promoted replica may not have received the master's last increments, and its
-- count starts again below tokens already given. The clock does not go back with a failover:
-- each token is at most the old master's clock when it was given (tokens cannot outrun the
-- clock, one name takes less than one acquisition a microsecond), and by the time a replica
-- is promoted its clock is past that, provided the two clocks differ by less than the time
-- from the last acquisition on the old master to the first on the new one (at least the
-- failover's detection delay: NTP keeps clocks within milliseconds, a failover takes
-- seconds). Where the clock is behind the counter (it stepped back), the counter goes on.
-- Exact: microseconds since 1970 stay below 2^53 (Lua numbers are doubles) until the year
-- 2255, and a whole number SET from Lua is written in plain digits (Redis 6.2, 7.0, Valkey).
local function next_fence(key)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local fence = tonumber(redis.call('GET', key) or 0) + 1
  if now > fence then
    fence = now
  end
  redis.call('SET', key, fence)
  return fence
end

-- A wait queue's arrival score, shared by lock_acquire, sem_acquire and rw_acquire (pasted in
-- where a script says `-- @include _arrival`; see redkit.scripts).

-- The server's ms `now`, raised to one past the last waiter's score in `queue`, so that every
-- arrival sorts strictly after those before it: on equal scores Redis orders by member, and a
-- random token would let a waiter that came in the same millisecond pass an earlier one.
local function arrival(queue, now)
  local last = redis.call('ZRANGE', queue, -1, -1, 'WITHSCORES')[2]
  if last and tonumber(last) >= now then
    return tonumber(last) + 1
  end
  return now
end

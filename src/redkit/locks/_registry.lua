-- The namespace's registry of held locks, semaphores and read-write locks, so that listing
-- them needs no SCAN (pasted in where a script says `-- @include _registry`; see
-- redkit.scripts). The including script sets REG and REG_SINCE to its two last KEYS first,
-- or to nil: on a Cluster they are not passed (a namespace-wide key is in another slot than
-- the lock's), and every function here is then a no-op.
--   REG: zset member -> ms when the (longest) lease ends; the member is the lock's first key
--        (owner, holders or readers), which names its kind and its name
--   REG_SINCE: hash member -> ms since when it has been held (the same members)
-- Bounded: a member leaves on release; one whose holder died without releasing stays until
-- its lease ended and the next new member trims it (100 a call); at most REG_CAP members
-- (the soonest-ending go first); both keys are PEXPIREd to the longest lease, so once every
-- lease has ended they are gone.

local REG_CAP = 10000

local function reg_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function reg_drop(members)
  if #members > 0 then
    redis.call('ZREM', REG, unpack(members))
    redis.call('HDEL', REG_SINCE, unpack(members))
  end
end

-- A lease of `member` runs until now + ttl: a new holder (`fresh`: held from now on, e.g. a
-- hand-over), another holder, or a renewal. Kept at the longest lease (GT) unless fresh.
local function reg_hold(member, now, ttl, fresh)
  if not REG then
    return
  end
  local old = redis.call('ZSCORE', REG, member)
  if fresh or not old or tonumber(old) <= now then
    redis.call('HSET', REG_SINCE, member, now)
    if not old then
      reg_drop(redis.call('ZRANGEBYSCORE', REG, '-inf', now, 'LIMIT', 0, 100))
      local over = redis.call('ZCARD', REG) - REG_CAP + 1
      if over > 0 then
        reg_drop(redis.call('ZRANGE', REG, 0, over - 1))
      end
    end
  end
  if fresh then
    redis.call('ZADD', REG, now + ttl, member)
  else
    redis.call('ZADD', REG, 'GT', now + ttl, member)
  end
  if redis.call('PTTL', REG_SINCE) < ttl then
    local keep = math.max(ttl, redis.call('PTTL', REG))
    redis.call('PEXPIRE', REG, keep)
    redis.call('PEXPIRE', REG_SINCE, keep)
  end
end

-- Nobody holds `member` any more.
local function reg_free(member)
  if REG then
    redis.call('ZREM', REG, member)
    redis.call('HDEL', REG_SINCE, member)
  end
end

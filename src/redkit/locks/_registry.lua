-- The namespace's registry of held locks, semaphores and read-write locks, so that listing
-- them needs no SCAN (pasted in where a script says `-- @include _registry`; see
-- redkit.scripts). The including script sets REG and REG_SINCE to its two last KEYS first,
-- or to nil: on a Cluster they are not passed (a namespace-wide key is in another slot than
-- the lock's), and every function here is then a no-op.
--   REG: zset member -> ms when the (longest) lease ends; the member is the lock's first key
--        (owner, holders or readers), which names its kind and its name
--   REG_SINCE: hash member -> ms since when it has been held (the same members)
-- Bounded, without a TTL (so that the lock's fast path pays no PTTL/PEXPIRE): one member per
-- live lease, which already has keys of its own, plus the members of holders that died
-- without releasing, until the next new member drops them (100 a call, so each new member
-- clears more than it can ever leave behind). A released lock's member leaves at once; the
-- keys vanish when the last member leaves. The reader (registry_list.lua) skips ended ones.

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

-- A lease of `member` runs until now + ttl: a new holder (`fresh`: held from now on: an
-- acquire or a hand-over), another holder, or a renewal. Kept at the longest lease (GT)
-- unless fresh. Written for the lock's fast path: a fresh hold costs ZADD, HSET and, for a
-- new member, one ZRANGEBYSCORE (which finds nothing to drop unless a holder died); a
-- release costs ZREM and HDEL.
local function reg_hold(member, now, ttl, fresh)
  if not REG then
    return
  end
  local added
  if fresh then
    added = redis.call('ZADD', REG, now + ttl, member)
    redis.call('HSET', REG_SINCE, member, now)
  else
    local old = redis.call('ZSCORE', REG, member)
    if not old or tonumber(old) <= now then
      redis.call('HSET', REG_SINCE, member, now)  -- free until now: held from now on
    end
    added = redis.call('ZADD', REG, 'GT', now + ttl, member)
  end
  if added == 1 then
    reg_drop(redis.call('ZRANGEBYSCORE', REG, '-inf', now, 'LIMIT', 0, 100))
  end
end

-- Nobody holds `member` any more.
local function reg_free(member)
  if REG then
    redis.call('ZREM', REG, member)
    redis.call('HDEL', REG_SINCE, member)
  end
end

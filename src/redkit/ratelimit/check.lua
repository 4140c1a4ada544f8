-- Check one or more rate limits and, if every one allows, consume from all of them at once.
-- All or nothing: a limit that rejects leaves every other limit unchanged, and a rejected
-- check writes nothing at all (no count, no TTL extension). Time is the server's (TIME).
--
-- KEYS[i]: the state key of limit i (all keys in one hash slot)
-- ARGV[1]: '1' to consume when allowed (hit), '0' to only look (peek)
-- ARGV[2 + 5*(i-1) .. 6 + 5*(i-1)]: limit i's algorithm ('fw' fixed window, 'sw' sliding
--          window counter, 'sl' sliding log, 'gc' GCRA), limit, window (us), burst, cost
-- Returns: a flat array, 4 integers per limit: allowed (1/0: would `cost` fit in this limit),
--          remaining (after this call), reset_after (us until the limit is back to full),
--          retry_after (us until `cost` would fit; 0 when it fits)
--
-- State and bounds (every key expires; nothing grows past its limit):
--   fw: hash {w = window index, n = count}; expires at the end of its window
--   sw: hash {w = window index, c = current count, p = previous count}; expires when the
--       current window stops weighing (at the end of the next window)
--   sl: sorted set of consumed units scored by time (us); at most `limit` live members
--       (pruned on every consuming hit); expires one window after the last hit
--   gc: string: the theoretical arrival time (us); expires when the bucket is full again
--
-- Written as two plain passes (read and decide, then write and report) rather than with
-- closures: this runs on every request, and each redis.call and allocation shows.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local commit = ARGV[1] == '1'
local n = #KEYS

local function ms(us)
  return math.max(1, math.ceil(us / 1000))
end

local function fmt(x)
  -- Large numbers must not pass through tostring, whose "%.14g" would round them.
  return string.format('%.0f', x)
end

-- Pass 1: read each limit's state and decide. s[i] keeps what pass 2 needs.
local s = {}
local all_allowed = true
for i = 1, n do
  local base = 2 + (i - 1) * 5
  local algo = ARGV[base]
  local limit = tonumber(ARGV[base + 1])
  local window = tonumber(ARGV[base + 2])
  local cost = tonumber(ARGV[base + 4])
  local key = KEYS[i]
  local st = { algo = algo, limit = limit, window = window, cost = cost, key = key }
  if algo == 'fw' then
    st.idx = math.floor(now / window)
    local stored = redis.call('HMGET', key, 'w', 'n')
    st.count = 0
    if tonumber(stored[1]) == st.idx then st.count = tonumber(stored[2]) or 0 end
    st.left = (st.idx + 1) * window - now
    st.allowed = st.count + cost <= limit
  elseif algo == 'sw' then
    st.idx = math.floor(now / window)
    st.elapsed = now - st.idx * window
    local stored = redis.call('HMGET', key, 'w', 'c', 'p')
    local w = tonumber(stored[1])
    st.fresh = w ~= st.idx
    st.curr, st.prev = 0, 0
    if w == st.idx then
      st.curr, st.prev = tonumber(stored[2]) or 0, tonumber(stored[3]) or 0
    elseif w == st.idx - 1 then
      st.prev = tonumber(stored[2]) or 0
    end
    st.estimate = st.prev * (window - st.elapsed) / window + st.curr
    st.allowed = st.estimate + cost <= limit
  elseif algo == 'sl' then
    st.horizon = now - window
    st.count = redis.call('ZCOUNT', key, '(' .. fmt(st.horizon), '+inf')
    st.allowed = st.count + cost <= limit
  elseif algo == 'gc' then
    st.interval = window / limit
    st.tolerance = tonumber(ARGV[base + 3]) * st.interval
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    st.tat = tat
    st.new_tat = tat + cost * st.interval
    -- Half a microsecond of slack absorbs floating-point error in interval * burst.
    st.allowed = now + 0.5 >= st.new_tat - st.tolerance
  else
    return redis.error_reply('ERR unknown rate limit algorithm ' .. tostring(algo))
  end
  all_allowed = all_allowed and st.allowed
  s[i] = st
end

-- Pass 2: consume (only if every limit allows) and report.
local consume = commit and all_allowed
local out = {}
for i = 1, n do
  local st = s[i]
  local algo, limit, window, cost, key = st.algo, st.limit, st.window, st.cost, st.key
  local remaining, reset, retry = 0, 0, 0
  if algo == 'fw' then
    if consume then
      redis.call('HSET', key, 'w', st.idx, 'n', st.count + cost)
      -- The TTL is the window's end, set when the window's first unit is taken.
      if st.count == 0 then redis.call('PEXPIRE', key, ms(st.left)) end
      remaining, reset = limit - st.count - cost, st.left
    else
      remaining = limit - st.count
      if st.count > 0 then reset = st.left end
      if not st.allowed then retry = st.left end
    end
  elseif algo == 'sw' then
    local curr = st.curr
    if consume then
      redis.call('HSET', key, 'w', st.idx, 'c', curr + cost, 'p', st.prev)
      -- Expires at the end of the next window, where this one stops weighing: the same
      -- instant for every hit of this window, so set once, when the window starts.
      if st.fresh then redis.call('PEXPIRE', key, ms(2 * window - st.elapsed)) end
      remaining = math.floor(limit - st.estimate - cost)
      curr = curr + cost
    else
      remaining = math.floor(limit - st.estimate)
      if not st.allowed then
        if curr + cost <= limit then
          -- The previous window's weight must fall to (limit - curr - cost) / prev.
          retry = window * (1 - (limit - curr - cost) / st.prev) - st.elapsed
        else
          -- Not before the next window, where this window's count weighs as the previous.
          retry = (window - st.elapsed) + window * (1 - (limit - cost) / curr)
        end
        retry = math.max(1, retry)
      end
    end
    if curr > 0 then
      reset = (window - st.elapsed) + window
    elseif st.prev > 0 then
      reset = window - st.elapsed
    end
  elseif algo == 'sl' then
    local count = st.count
    if consume then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(st.horizon))
      local args = {}
      for j = 1, cost do
        -- The live count makes members unique even for two hits in one microsecond.
        args[#args + 1] = fmt(now)
        args[#args + 1] = fmt(now) .. ':' .. (count + j)
      end
      redis.call('ZADD', key, unpack(args))
      redis.call('PEXPIRE', key, ms(window))
      remaining, reset = limit - count - cost, window
    else
      remaining = limit - count
      if count > 0 then
        local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
        reset = tonumber(newest[2]) + window - now
      end
      if not st.allowed then
        -- The (count + cost - limit)-th oldest live unit must leave the window first.
        local nth = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(st.horizon), '+inf',
          'WITHSCORES', 'LIMIT', count + cost - limit - 1, 1)
        retry = math.max(1, tonumber(nth[2]) + window - now)
      end
    end
  else -- 'gc'
    local at = st.tat
    if consume then
      redis.call('SET', key, fmt(st.new_tat), 'PX', ms(st.new_tat - now))
      at = st.new_tat
    elseif not st.allowed then
      retry = math.max(1, st.new_tat - st.tolerance - now)
    end
    remaining = math.floor((now + 0.5 - (at - st.tolerance)) / st.interval)
    reset = at - now
  end
  out[#out + 1] = st.allowed and 1 or 0
  out[#out + 1] = math.max(0, remaining)
  out[#out + 1] = math.max(0, math.ceil(reset))
  out[#out + 1] = math.ceil(retry)
end
return out

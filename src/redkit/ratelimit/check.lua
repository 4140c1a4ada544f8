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
--       current window stops weighing (at most 2 windows)
--   sl: sorted set of consumed units scored by time (us); at most `limit` live members
--       (pruned on every consuming hit); expires one window after the last hit
--   gc: string: the theoretical arrival time (us); expires when the bucket is full again

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function ms(us)
  return math.max(1, math.ceil(us / 1000))
end

local function fmt(n)
  -- Large numbers must not pass through tostring, whose "%.14g" would round them.
  return string.format('%.0f', n)
end

-- Each evaluator reads one limit's state and returns: allowed, report(consumed) giving
-- (remaining, reset_after, retry_after), and write() that consumes `cost`.

local function fixed_window(key, limit, window, _, cost)
  local idx = math.floor(now / window)
  local stored = redis.call('HMGET', key, 'w', 'n')
  local count = 0
  if tonumber(stored[1]) == idx then count = tonumber(stored[2]) or 0 end
  local left = (idx + 1) * window - now
  local allowed = count + cost <= limit
  local function report(consumed)
    if consumed then return limit - count - cost, left, 0 end
    return limit - count, (count > 0) and left or 0, allowed and 0 or left
  end
  local function write()
    redis.call('HSET', key, 'w', idx, 'n', count + cost)
    redis.call('PEXPIRE', key, ms(left))
  end
  return allowed, report, write
end

local function sliding_window(key, limit, window, _, cost)
  local idx = math.floor(now / window)
  local elapsed = now - idx * window
  local stored = redis.call('HMGET', key, 'w', 'c', 'p')
  local w = tonumber(stored[1])
  local curr, prev = 0, 0
  if w == idx then
    curr, prev = tonumber(stored[2]) or 0, tonumber(stored[3]) or 0
  elseif w == idx - 1 then
    prev = tonumber(stored[2]) or 0
  end
  local estimate = prev * (window - elapsed) / window + curr
  local allowed = estimate + cost <= limit
  local function reset(c)
    if c > 0 then return (window - elapsed) + window end
    if prev > 0 then return window - elapsed end
    return 0
  end
  local function report(consumed)
    if consumed then return math.floor(limit - estimate - cost), reset(curr + cost), 0 end
    local retry = 0
    if not allowed then
      if curr + cost <= limit then
        -- The previous window's weight must fall to (limit - curr - cost) / prev.
        retry = window * (1 - (limit - curr - cost) / prev) - elapsed
      else
        -- Not before the next window, where this window's count weighs as the previous.
        retry = (window - elapsed) + window * (1 - (limit - cost) / curr)
      end
      retry = math.max(1, retry)
    end
    return math.floor(limit - estimate), reset(curr), retry
  end
  local function write()
    redis.call('HSET', key, 'w', idx, 'c', curr + cost, 'p', prev)
    redis.call('PEXPIRE', key, ms(2 * window - elapsed))
  end
  return allowed, report, write
end

local function sliding_log(key, limit, window, _, cost)
  local horizon = now - window
  local count = redis.call('ZCOUNT', key, '(' .. fmt(horizon), '+inf')
  local allowed = count + cost <= limit
  local function report(consumed)
    if consumed then return limit - count - cost, window, 0 end
    local reset, retry = 0, 0
    if count > 0 then
      local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
      reset = tonumber(newest[2]) + window - now
    end
    if not allowed then
      -- The (count + cost - limit)-th oldest live unit must leave the window first.
      local nth = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(horizon), '+inf', 'WITHSCORES',
        'LIMIT', count + cost - limit - 1, 1)
      retry = math.max(1, tonumber(nth[2]) + window - now)
    end
    return limit - count, reset, retry
  end
  local function write()
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(horizon))
    local args = {}
    for j = 1, cost do
      -- The live count makes members unique even for two hits in one microsecond.
      args[#args + 1] = fmt(now)
      args[#args + 1] = fmt(now) .. ':' .. (count + j)
    end
    redis.call('ZADD', key, unpack(args))
    redis.call('PEXPIRE', key, ms(window))
  end
  return allowed, report, write
end

local function gcra(key, limit, window, burst, cost)
  local interval = window / limit
  local tolerance = burst * interval
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  -- Half a microsecond of slack absorbs floating-point error in interval * burst.
  local allowed = now + 0.5 >= new_tat - tolerance
  local function left(at)
    return math.floor((now + 0.5 - (at - tolerance)) / interval)
  end
  local function report(consumed)
    if consumed then return left(new_tat), new_tat - now, 0 end
    return left(tat), tat - now, allowed and 0 or math.max(1, new_tat - tolerance - now)
  end
  local function write()
    redis.call('SET', key, fmt(new_tat), 'PX', ms(new_tat - now))
  end
  return allowed, report, write
end

local evaluators = { fw = fixed_window, sw = sliding_window, sl = sliding_log, gc = gcra }

local commit = ARGV[1] == '1'
local n = #KEYS
local verdicts, reports, writes = {}, {}, {}
local all_allowed = true
for i = 1, n do
  local base = 2 + (i - 1) * 5
  local evaluate = evaluators[ARGV[base]]
  if not evaluate then
    return redis.error_reply('ERR unknown rate limit algorithm ' .. tostring(ARGV[base]))
  end
  verdicts[i], reports[i], writes[i] = evaluate(KEYS[i], tonumber(ARGV[base + 1]),
    tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]))
  all_allowed = all_allowed and verdicts[i]
end

local consume = commit and all_allowed
local out = {}
for i = 1, n do
  if consume then writes[i]() end
  local remaining, reset, retry = reports[i](consume)
  out[#out + 1] = verdicts[i] and 1 or 0
  out[#out + 1] = math.max(0, remaining)
  out[#out + 1] = math.max(0, math.ceil(reset))
  out[#out + 1] = math.ceil(retry)
end
return out

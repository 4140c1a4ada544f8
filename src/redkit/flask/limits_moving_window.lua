-- limits storage, moving window: the oldest live entry and the number of live entries.
-- KEYS[1]: the entries, a sorted set '<ns>:{limits:<key>}:m' (score: time in us)
-- ARGV[1]: the window, ms
-- Returns: {time of the oldest live entry in us (the server's time when there is none),
--           the number of live entries}
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local after = '(' .. string.format('%.0f', now - tonumber(ARGV[1]) * 1000)
local count = redis.call('ZCOUNT', KEYS[1], after, '+inf')
if count == 0 then
  return {string.format('%.0f', now), 0}
end
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], after, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {oldest[2], count}

-- limits storage, sliding window counter: the counts of the previous and current windows.
-- KEYS[1]: the base '<ns>:{limits:<key>}' (windows at '<base>:w:<n>', see limits_sliding_acquire)
-- ARGV[1]: the window, ms
-- Returns: {previous window's count, current window's count, ms until the current one ends}
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window = tonumber(ARGV[1])
local index = math.floor(now / window)
local count = tonumber(redis.call('GET', KEYS[1] .. ':w:' .. string.format('%.0f', index)) or '0')
local before = tonumber(
  redis.call('GET', KEYS[1] .. ':w:' .. string.format('%.0f', index - 1)) or '0'
)
return {before, count, (index + 1) * window - now}

-- limits storage, sliding window counter: forget the windows that still count.
-- KEYS[1]: the base '<ns>:{limits:<key>}' (windows at '<base>:w:<n>', see limits_sliding_acquire)
-- ARGV[1]: the window, ms
-- Returns: the number of keys deleted
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local index = math.floor(now / tonumber(ARGV[1]))
return redis.call(
  'DEL',
  KEYS[1] .. ':w:' .. string.format('%.0f', index),
  KEYS[1] .. ':w:' .. string.format('%.0f', index - 1)
)

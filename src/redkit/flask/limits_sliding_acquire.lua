-- limits storage, sliding window counter: take `amount` if the weighted count has room.
-- Windows are numbered on the server's clock (floor(now / window)); the count of window n
-- lives at '<base>:w:<n>' with a TTL of two windows (it weighs on through the next one).
-- KEYS[1]: the base '<ns>:{limits:<key>}', a prefix never written itself
-- ARGV[1]: the window, ms
-- ARGV[2]: the limit
-- ARGV[3]: the amount
-- Returns: 1 if taken, 0 if the weighted count has no room
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window = tonumber(ARGV[1])
local index = math.floor(now / window)
local current = KEYS[1] .. ':w:' .. string.format('%.0f', index)
local previous = KEYS[1] .. ':w:' .. string.format('%.0f', index - 1)
local count = tonumber(redis.call('GET', current) or '0')
local before = tonumber(redis.call('GET', previous) or '0')
-- The previous window weighs by the share of it still inside the moving window.
local left = (index + 1) * window - now
local amount = tonumber(ARGV[3])
if before * left / window + count + amount > tonumber(ARGV[2]) then
  return 0
end
redis.call('INCRBY', current, amount)
redis.call('PEXPIRE', current, 2 * window)
return 1

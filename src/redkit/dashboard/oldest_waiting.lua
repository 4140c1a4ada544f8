-- oldest_waiting: when the longest-waiting job of a queue became ready, read-only.
-- The waiting set is ordered by priority band, then arrival, so the head of each band is
-- that band's oldest job: the script visits the band heads (at most ARGV[1] bands, which
-- bounds its work) and returns the earliest "due" time among them.
-- KEYS[1]: the queue's waiting zset
-- ARGV[1]: most priority bands to visit   ARGV[2]: job hash prefix
-- ARGV[3]: band width (the score step between two priorities)
-- Returns: {due time (ms) of the oldest band head or -1, server time (ms)}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bands, prefix, width = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local oldest = -1
local from = '-inf'
for _ = 1, bands do
  local head = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #head == 0 then break end
  local due = tonumber(redis.call('HGET', prefix .. head[1], 'due') or now)
  if oldest < 0 or due < oldest then oldest = due end
  from = (math.floor(tonumber(head[2]) / width) + 1) * width
end
return {oldest, now}

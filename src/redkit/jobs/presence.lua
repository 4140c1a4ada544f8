-- presence: one line per live worker in the workers hash (`redkit jobs workers`), written by
-- the worker's heartbeat; removes the lines of workers that stopped renewing theirs.
-- KEYS[1]: workers hash (field: worker id, value: "<server ms>|<status JSON>")
-- ARGV[1]: worker id   ARGV[2]: status JSON ('' removes this worker's line)
-- ARGV[3]: max age (ms): a line not renewed for this long is stale
-- Returns: the number of stale lines removed.
-- Bounded: every write drops the stale lines (scanning at most 1000), and the hash expires
-- max age after the last write, so it is gone once every worker has gone.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local age = tonumber(ARGV[3])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], now .. '|' .. ARGV[2])
  redis.call('PEXPIRE', KEYS[1], age)
end
local removed = 0
local cursor = '0'
local scanned = 0
repeat
  local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 100)
  cursor = page[1]
  local items = page[2]
  for i = 1, #items, 2 do
    local seen = tonumber(string.match(items[i + 1], '^(%d+)|'))
    if seen == nil or now - seen > age then
      redis.call('HDEL', KEYS[1], items[i])
      removed = removed + 1
    end
  end
  scanned = scanned + #items / 2
until cursor == '0' or scanned >= 1000
return removed

-- presence: a worker says it is alive (each heartbeat) or that it leaves, and entries of
-- workers that stopped beating are dropped. Read by the dashboard ("workers alive").
-- KEYS[1]: the namespace's workers hash (worker id -> "<last beat, ms>|<JSON description>")
-- ARGV[1]: worker id   ARGV[2]: JSON description ("": the worker leaves)
-- ARGV[3]: how long (ms) an entry counts as alive without a beat
-- Returns: how many workers are alive after the call.
-- Bounded: entries older than ARGV[3] are removed on every call, and at most 10000 are kept.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local seen = tonumber(string.match(all[i + 1], '^(%d+)|')) or 0
  if seen < now - ttl then redis.call('HDEL', KEYS[1], all[i]) end
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
elseif redis.call('HLEN', KEYS[1]) < 10000 or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], now .. '|' .. ARGV[2])
end
-- The hash outlives its last worker by one alive-window only.
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('HLEN', KEYS[1])

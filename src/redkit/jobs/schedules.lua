-- schedules: the registry's live schedules, read-only (see announce.lua). Not a transition.
-- KEYS[1]: seen (zset: schedule name -> last announce, ms)   KEYS[2]: info (hash: name -> JSON)
-- ARGV[1]: max age (ms): older announcements are left out   ARGV[2]: at most this many
-- Returns: {server time (ms), then per schedule: name, last announce (ms), JSON}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local names = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', now - tonumber(ARGV[1]),
  'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {now}
for i = 1, #names, 2 do
  out[#out + 1] = names[i]
  out[#out + 1] = names[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], names[i]) or '{}'
end
return out

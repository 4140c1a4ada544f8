-- List the live entries of the namespace's lock registry (see _registry.lua); reads only.
-- KEYS[1]: the registry zset (member -> ms when its longest lease ends)
-- KEYS[2]: the registry hash (member -> ms since when it has been held)
-- ARGV[1]: at most this many entries (the soonest-ending first)
-- Returns: {server ms now, member, lease end ms, held since ms (or false), member, ...};
--          an entry whose lease has ended (a holder that died) is left out
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[1]))
local out = {now}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = live[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i])
end
return out

-- Keep the server busy for roughly ARGV[1] milliseconds, then add one to a counter.
-- (A counted loop: the clock seen by TIME may be frozen while a script runs.)
-- KEYS[1]: the counter
-- ARGV[1]: roughly how many milliseconds to spin
-- Returns: the counter's new value
local x = 0
for i = 1, tonumber(ARGV[1]) * 50000 do x = x + i % 7 end
return redis.call('INCR', KEYS[1])

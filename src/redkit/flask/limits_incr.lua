-- limits storage, fixed window: add to a counter that expires one window after its first hit.
-- KEYS[1]: the counter '<ns>:{limits:<key>}:c'
-- ARGV[1]: the window (the counter's TTL), ms
-- ARGV[2]: the amount to add
-- Returns: the counter after the addition
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
-- A counter without a TTL (just made, or written by hand) gets one: it can never stay forever.
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count

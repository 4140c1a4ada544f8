-- Give up the single-flight lock without a value (the computation failed) and wake waiters.
-- KEYS[1]: the single-flight lock
-- KEYS[2]: the notify list (PX = ARGV[2] when pushed)
-- ARGV[1]: the lock token
-- ARGV[2]: notify list lifetime ms
-- Returns: the number of waiters woken
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
local waiters = tonumber(redis.call('HGET', KEYS[1], 'waiters') or '0')
for _ = 1, math.min(waiters, 10000) do
  redis.call('RPUSH', KEYS[2], '1')
end
if waiters > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('DEL', KEYS[1])
return waiters

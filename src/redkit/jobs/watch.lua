-- watch: read a job, and if it has not finished, register one waiter so that complete/fail/
-- cancel push a token to its done list (a caller then blocks on it with BLPOP: no polling).
-- KEYS[1]: the job's hash
-- ARGV[1]: 1 register a waiter, 0 only read
-- Returns: the job's hash as a flat field/value array (empty if there is no such job).
local f = redis.call('HGETALL', KEYS[1])
if ARGV[1] == '1' and #f > 0 then
  local state = redis.call('HGET', KEYS[1], 'state')
  if state ~= 'completed' and state ~= 'failed' and state ~= 'cancelled' then
    redis.call('HINCRBY', KEYS[1], 'notify', 1)
  end
end
return f

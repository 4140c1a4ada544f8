-- progress: not a transition (the job stays active; see redkit/jobs/states.py): the running
-- attempt records how far it got, and the lifecycle stream carries it to watchers.
-- KEYS[1]: the job hash   KEYS[2]: events stream
-- ARGV[1]: worker id   ARGV[2]: attempt   ARGV[3]: progress (JSON)   ARGV[4]: events MAXLEN
-- ARGV[5]: job id (for the event)
-- Returns: 1 recorded, 0 not (the job is no longer this worker's attempt: finished, lost
--   its lease to another worker, or gone). Bounded: one field; the stream is MAXLEN-trimmed.
local f = redis.call('HMGET', KEYS[1], 'state', 'owner', 'attempts')
if f[1] ~= 'active' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[3])
local maxlen = tonumber(ARGV[4])
if maxlen > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'event', 'progress', 'job', ARGV[5],
    'progress', ARGV[3])
end
return 1

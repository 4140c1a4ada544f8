-- delete: waiting | delayed | retrying | completed | failed | cancelled -> removed (see
-- redkit/jobs/states.py), by hand (the dashboard's delete). An active job is refused: cancel
-- it first, so that its worker stops it.
-- KEYS[1]: waiting   KEYS[2]: delayed   KEYS[3]: completed   KEYS[4]: failed
-- KEYS[5]: cancelled   KEYS[6]: events
-- ARGV[1]: job hash prefix   ARGV[2]: job id   ARGV[3]: events MAXLEN (0: none)
-- Returns: the job's state before the call (false: no such job); an "active" job is left.
local prefix, id = ARGV[1], ARGV[2]
local jkey = prefix .. id
local state = redis.call('HGET', jkey, 'state')
if not state then return false end
if state == 'active' then return state end
for k = 1, 5 do redis.call('ZREM', KEYS[k], id) end
redis.call('DEL', jkey)
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', tonumber(ARGV[3]), '*', 'event', 'deleted',
    'job', id)
end
return state

-- set_paused: pause or resume a queue. A paused queue hands out nothing (claim checks the
-- flag); jobs keep arriving and delayed jobs keep becoming due.
-- KEYS[1]: paused flag (durable queue state)   KEYS[2]: wake list   KEYS[3]: events
-- ARGV[1]: 1 pause, 0 resume   ARGV[2]: events MAXLEN (0: none)
-- Returns: 1 if the state changed, 0 if it already was so.
local changed
if ARGV[1] == '1' then
  changed = redis.call('SETNX', KEYS[1], '1')
else
  changed = redis.call('DEL', KEYS[1])
  -- Idle workers block on the wake list: give them a token per waiting job (bounded).
  if changed == 1 and redis.call('LLEN', KEYS[2]) < 64 then redis.call('RPUSH', KEYS[2], '1') end
end
if changed == 1 and tonumber(ARGV[2]) > 0 then
  local name = 'resumed'
  if ARGV[1] == '1' then name = 'paused' end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', tonumber(ARGV[2]), '*', 'event', name, 'job', '')
end
return changed

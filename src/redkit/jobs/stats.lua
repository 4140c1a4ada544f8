-- stats: counts by state, read-only (see redkit/jobs/states.py).
-- KEYS[1]: waiting   KEYS[2]: delayed   KEYS[3]: active   KEYS[4]: completed
-- KEYS[5]: failed   KEYS[6]: paused flag   KEYS[7]: cancelled
-- ARGV: none
-- Returns: {waiting, delayed (incl. retrying), active, completed, failed, paused (1/0),
--   cancelled}
return {
  redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]), redis.call('EXISTS', KEYS[6]),
  redis.call('ZCARD', KEYS[7]),
}

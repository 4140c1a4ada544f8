-- Read a session; touch it (slide its idle deadline) at most once per touch_every.
-- KEYS[1]: the session hash '<base>:s:<sha256 of the token>'
-- ARGV[1]: touch_every ms; ARGV[2]: idle ttl ms
-- Returns: nil when there is no live session, else {last seen ms, absolute deadline ms,
-- created ms, meta JSON, data JSON}
local f = redis.call('HMGET', KEYS[1], 'l', 'a', 'c', 'm', 'd')
local seen_at, deadline = tonumber(f[1]), tonumber(f[2])
if not seen_at or not deadline then return nil end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= deadline then
  -- The key expires at this instant anyway; the absolute timeout is never passed.
  redis.call('DEL', KEYS[1])
  return nil
end
if now - seen_at >= tonumber(ARGV[1]) then
  local stamp = string.format('%.0f', now)
  redis.call('HSET', KEYS[1], 'l', stamp)
  local expiry = math.min(now + tonumber(ARGV[2]), deadline)
  redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', expiry))
  f[1] = stamp
end
return f

-- Read one cached permission entry of a user, if it has not expired.
-- KEYS[1]: the user's permission hash '<base>:p:<user id>': project -> '<expiry ms>:<JSON>'
-- ARGV[1]: the project id
-- Returns: the JSON value, or nil when absent or expired
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return nil end
local sep = string.find(raw, ':', 1, true)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not sep or tonumber(string.sub(raw, 1, sep - 1)) <= now then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return nil
end
return string.sub(raw, sep + 1)

-- Cache one permission entry of a user for a while; prune the user's expired entries.
-- KEYS[1]: the user's permission hash '<base>:p:<user id>': project -> '<expiry ms>:<JSON>'
-- ARGV[1]: the project id; ARGV[2]: ttl ms; ARGV[3]: the JSON value
-- Returns: the entry's expiry, ms since the epoch
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', expiry) .. ':' .. ARGV[3])
-- Bounded: expired entries go on every write, and the hash lives until its last entry expires.
local latest = expiry
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local raw = entries[i + 1]
  local sep = string.find(raw, ':', 1, true)
  local at = sep and tonumber(string.sub(raw, 1, sep - 1))
  if not at or at <= now then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif at > latest then
    latest = at
  end
end
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', latest))
return expiry

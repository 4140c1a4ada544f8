-- Django's cache.touch: give a fresh entry a new expiry, and its tag sets with it.
-- KEYS[1]: the entry ("<fresh>:<created>:<delta>:<swr>|<tags JSON>\n<payload>", PX = ttl)
-- ARGV[1]: the new ttl in ms
-- ARGV[2]: the shard's key prefix; the entry's tag sets are ARGV[2] .. "t:" .. name for the
--          names the entry lists (the same hash tag as KEYS[1], so the same slot and node,
--          as invalidate.lua relies on for the entries it deletes)
-- Returns: 1 if the entry was touched, 0 if there is no fresh entry
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', KEYS[1])
if not v then
  return 0
end
local fresh, rest = string.match(v, '^(%d+):%d+:%d+:%d+|(.*)$')
if not fresh or now >= tonumber(fresh) then
  return 0
end
local newline = string.find(rest, '\n', 1, true)
if not newline then
  return 0
end
local ttl = tonumber(ARGV[1])
-- The created time restarts too: the entry's age counts from its new lease.
redis.call('SET', KEYS[1], string.format('%d:%d:0:0|', now + ttl, now) .. rest, 'PX', ttl)
for _, name in ipairs(cjson.decode(string.sub(rest, 1, newline - 1))) do
  local tk = ARGV[2] .. 't:' .. name
  -- A member's score is its expiry: trimmed later than the entry lives, never earlier, so an
  -- invalidation still finds the touched entry.
  redis.call('ZADD', tk, now + ttl, KEYS[1])
  if redis.call('PTTL', tk) < ttl then
    redis.call('PEXPIRE', tk, ttl)
  end
end
return 1

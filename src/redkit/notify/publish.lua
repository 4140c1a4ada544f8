-- Publish one event: append it to the channel's history and fan it out live, atomically.
-- KEYS[1]: the channel's history stream (bounded: trimmed to exactly ARGV[2] entries on
--          every append; optionally also expires ARGV[5] ms after the last publish)
-- KEYS[2]: the pub/sub channel name (not a key; declared so that a Cluster checks that it
--          hashes to the stream's slot, which sharded pub/sub requires)
-- ARGV[1]: the event's data, as JSON text
-- ARGV[2]: history length (MAXLEN, >= 1)
-- ARGV[3]: 1 to SPUBLISH (sharded pub/sub, Cluster), 0 to PUBLISH
-- ARGV[4]: 1 to also PUBLISH classically (pattern subscribers on a Cluster), else 0
-- ARGV[5]: history TTL in milliseconds, 0 for none
-- Returns: the event id (the stream entry id, which carries the server's time)
--
-- The live message is "<id>\n<previous id>\n<data>". The previous id (the entry this one
-- follows, "0-0" for the first) lets a subscriber notice that it missed something (its last
-- id differs) and fetch exactly the missing entries from the stream. It is stored in the
-- entry too ("p"), so a resume can tell "nothing was trimmed" from "history starts later".
local prev = '0-0'
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then
  prev = last[1][1]
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'd', ARGV[1], 'p', prev)
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local message = id .. '\n' .. prev .. '\n' .. ARGV[1]
if ARGV[3] == '1' then
  redis.call('SPUBLISH', KEYS[2], message)
else
  redis.call('PUBLISH', KEYS[2], message)
end
if ARGV[4] == '1' then
  redis.call('PUBLISH', KEYS[2], message)
end
return id

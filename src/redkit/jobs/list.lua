-- list: the jobs of one state set, a page at a time, read-only.
-- KEYS[1]: the state's sorted set (waiting, delayed, active, completed, failed or cancelled)
-- ARGV[1]: job hash prefix   ARGV[2]: offset   ARGV[3]: limit   ARGV[4]: 1 newest first
-- Returns: {total, then per job: id, its hash as a flat field/value array}
local prefix, offset, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ids
if ARGV[4] == '1' then
  ids = redis.call('ZREVRANGE', KEYS[1], offset, offset + limit - 1)
else
  ids = redis.call('ZRANGE', KEYS[1], offset, offset + limit - 1)
end
local out = {redis.call('ZCARD', KEYS[1])}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGETALL', prefix .. id)
end
return out

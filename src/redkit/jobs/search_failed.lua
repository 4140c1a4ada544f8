-- search_failed: find failed or cancelled jobs by id, function or error text, read-only.
-- No KEYS/SCAN: it walks the failed set, newest first, and matches each id against the
-- search index kept by fail.lua (jobs failed another way, e.g. cancelled while waiting or
-- out of attempts at claim, are matched on their hash's fields instead).
-- KEYS[1]: failed zset   KEYS[2]: failed-job search index (hash id -> "function\nerror")
-- ARGV[1]: job hash prefix   ARGV[2]: query as typed (matched against ids exactly)
-- ARGV[3]: query lower-cased (a plain substring of the function or error text)
-- ARGV[4]: most jobs to return   ARGV[5]: most ids to look at (bounds the call's work)
-- Returns: {ids looked at, then per job found: id, its hash as a flat field/value array}
local prefix, exact, needle = ARGV[1], ARGV[2], ARGV[3]
local limit, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {0}
local found, seen, offset = 0, 0, 0
while seen < budget and found < limit do
  local chunk = math.min(500, budget - seen)
  local ids = redis.call('ZREVRANGE', KEYS[1], offset, offset + chunk - 1)
  if #ids == 0 then break end
  offset = offset + #ids
  for _, id in ipairs(ids) do
    seen = seen + 1
    local hit = id == exact
    if not hit then
      local text = redis.call('HGET', KEYS[2], id)
      if not text then
        local f = redis.call('HMGET', prefix .. id, 'fn', 'error')
        text = string.lower((f[1] or '') .. '\n' .. string.sub(f[2] or '', 1, 300))
      end
      hit = string.find(text, needle, 1, true) ~= nil
    end
    if hit then
      local job = redis.call('HGETALL', prefix .. id)
      if #job > 0 then
        out[#out + 1] = id
        out[#out + 1] = job
        found = found + 1
        if found >= limit then break end
      end
    end
  end
end
out[1] = seen
return out

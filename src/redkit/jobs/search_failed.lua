-- search_failed: find failed jobs by id, function or error text, read-only.
-- No KEYS/SCAN: it walks the failed set, newest first, and matches each job's "search" field
-- (its function and error head, lower-cased, written by fail.lua; a job failed another way,
-- out of attempts at claim, is matched on its "fn" and "error" fields instead).
-- KEYS[1]: failed zset
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
      local f = redis.call('HMGET', prefix .. id, 'search', 'fn', 'error')
      local text = f[1]
      if not text then
        text = string.lower((f[2] or '') .. '\n' .. string.sub(f[3] or '', 1, 300))
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

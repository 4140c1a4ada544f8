-- drain: waiting | delayed | retrying -> removed (see redkit/jobs/states.py), at most
-- ARGV[2] jobs per call so that one call never blocks the server for long; the caller
-- repeats until it returns 0. Active jobs finish normally.
-- KEYS[1]: waiting   KEYS[2]: delayed
-- ARGV[1]: job hash prefix   ARGV[2]: max jobs per call
-- Returns: how many jobs were removed by this call.
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local removed = 0
for k = 1, 2 do
  local ids = redis.call('ZRANGE', KEYS[k], 0, limit - removed - 1)
  for _, id in ipairs(ids) do redis.call('DEL', prefix .. id) end
  if #ids > 0 then
    redis.call('ZREMRANGEBYRANK', KEYS[k], 0, #ids - 1)
    removed = removed + #ids
  end
  if removed >= limit then break end
end
return removed

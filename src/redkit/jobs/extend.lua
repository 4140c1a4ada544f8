-- extend: active -> active, the heartbeat (see redkit/jobs/states.py): renews the leases of
-- a worker's running jobs in one call.
-- KEYS[1]: active
-- ARGV[1]: job hash prefix   ARGV[2]: worker id   ARGV[3]: lease (ms)
-- ARGV[4]: N, then 2 values per job: id, attempt
-- Returns: one entry per job: 1 renewed, 2 renewed but a cancel was requested (stop it),
--   0 lost (the lease had expired and the job was handed out again, or it is gone).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, worker, lease, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 0, n - 1 do
  local id, attempt = ARGV[5 + i * 2], ARGV[6 + i * 2]
  local f = redis.call('HMGET', prefix .. id, 'state', 'owner', 'attempts', 'cancel')
  if f[1] == 'active' and f[2] == worker and f[3] == attempt then
    redis.call('ZADD', KEYS[1], 'XX', now + lease, id)
    if f[4] == '1' then out[#out + 1] = 2 else out[#out + 1] = 1 end
  else
    out[#out + 1] = 0
  end
end
return out

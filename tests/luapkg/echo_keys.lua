-- Echo what the script was given, to prove where and how it ran.
-- KEYS: any number of keys (one hash slot)
-- ARGV: any number of arguments
-- Returns: {#KEYS, KEYS..., ARGV...}
local out = {#KEYS}
for _, k in ipairs(KEYS) do out[#out + 1] = k end
for _, a in ipairs(ARGV) do out[#out + 1] = a end
return out

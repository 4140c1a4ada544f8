-- limits storage: when a counter expires, on the server's clock.
-- KEYS[1]: the counter '<ns>:{limits:<key>}:c'
-- ARGV: none
-- Returns: {server time in ms, the counter's PTTL in ms (-2 absent, -1 no TTL)}
local now = redis.call('TIME')
return {tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), redis.call('PTTL', KEYS[1])}

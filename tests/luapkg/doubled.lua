-- Return twice ARGV[1], with a helper pasted in from _double.lua.
-- KEYS[1]: any key (unused)
-- ARGV[1]: a number
-- Returns: the number doubled
-- @include _double
return double(tonumber(ARGV[1]))

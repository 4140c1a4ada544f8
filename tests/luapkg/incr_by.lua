-- Add to a counter and return the new value.
-- KEYS[1]: the counter
-- ARGV[1]: the amount (an integer)
-- Returns: the counter's new value; an error reply if ARGV[1] is not an integer
return redis.call('INCRBY', KEYS[1], ARGV[1])

-- The owner value of a lock, shared by the lock scripts (pasted in where a script says
-- `-- @include _owner`; see redkit.scripts).
--
-- The owner key holds `<token>@<server ms of the acquisition>`: the "time held" an operator
-- sees rides in the value the acquisition writes anyway, so it costs no key and no round
-- trip. A bare `<token>` (written by a client from before the stamp) is still a valid owner.
-- Tokens are hex, '.' and digits, never '@', so comparing the part before the '@' is as exact
-- as comparing the whole value was.

-- True if owner value `value` (a string, or false when the key is missing) is `token`'s.
local function holds(value, token)
  if not value then
    return false
  end
  if value == token then
    return true
  end
  local n = #token
  return #value > n + 1 and string.byte(value, n + 1) == 64 and string.sub(value, 1, n) == token
end

-- The owner value for `token` acquiring at server ms `now`. A token without the 's' marker
-- before its '.<ttl>' comes from a client whose scripts compare the whole value: it gets the
-- bare token, so a lock handed to such a waiter stays its own.
local function owner_value(token, now)
  if string.find(token, 's%.%d+$') then
    return token .. '@' .. string.format('%.0f', now)
  end
  return token
end

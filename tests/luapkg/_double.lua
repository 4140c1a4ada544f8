-- A piece for `-- @include _double` (not a script of its own).
local function double(x)
  return x * 2
end

-- Count a failed login against each key, each counter expiring a window after its first.
-- KEYS: counters   ARGV[1] window seconds   Returns the new counts.
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  out[i] = n
end
return out

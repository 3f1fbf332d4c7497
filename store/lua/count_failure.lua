-- count_failure: count a failed login against each key, each counter expiring a window
-- after its first failure.
-- uses: (none)
--
-- KEYS: the counters (any number)   ARGV[1] window seconds
-- Returns the new counts, one per key, in order.
local counter_keys, window_s = KEYS, ARGV[1]

local out = {}
for i, key in ipairs(counter_keys) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, window_s) end
  out[i] = n
end
return out

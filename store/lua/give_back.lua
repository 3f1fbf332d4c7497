-- give_back: a login attempt login_gate.lua counted but that was never checked (its
-- connection closed, or the hasher was full, before the password was hashed) no longer
-- counts: one step, so an attempt counted meanwhile by another connection is not wiped.
-- uses: (none)
--
-- KEYS[1] pair counter (user, address)
-- Returns the attempts still counted.
local pair_key = KEYS[1]

local left = redis.call('DECR', pair_key)
if left <= 0 then
  redis.call('DEL', pair_key)  -- the last one, or it expired meanwhile (DECR made it -1)
  return 0
end
return left

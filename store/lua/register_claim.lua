-- register_claim: the shared half of a registration (the `{g}` slot): refuse a nickname
-- that looks like another user's (its skeleton is held by another user key) or an address
-- that registered too many accounts this hour; otherwise count the registration and hold
-- the skeleton for this user key. register.lua then creates the account in the user's
-- slot (a taken nickname holds its own skeleton already, so nothing is lost).
-- uses: (none)
--
-- KEYS[1] the skeleton's reservation (skeleton -> user key)  KEYS[2] the address's
-- registrations this hour
-- ARGV[1] user key  ARGV[2] registrations per address per hour (0: no limit)
-- Returns 1 when claimed, -1 when the address registered too many, -2 when another user
-- holds a nickname that looks the same.
local skeleton_key, registrations_key = KEYS[1], KEYS[2]
local user, max_registrations = ARGV[1], tonumber(ARGV[2])

local look_alike = redis.call('GET', skeleton_key)
if look_alike and look_alike ~= user then return -2 end
if max_registrations > 0 then
  if tonumber(redis.call('GET', registrations_key) or '0') >= max_registrations then
    return -1
  end
  if redis.call('INCR', registrations_key) == 1 then
    redis.call('EXPIRE', registrations_key, 3600)
  end
end
redis.call('SET', skeleton_key, user)
return 1

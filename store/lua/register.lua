-- register: create an account unless the nickname is taken, looks like another user's,
-- or the address registered too many this hour; every user is in #general (created if
-- need be). The account records its creation time in seconds and counts as seen now
-- (accounts unseen too long are forgotten).
-- uses: time
--
-- KEYS[1] account hash  KEYS[2] user's chats  KEYS[3] #general members  KEYS[4] #general hash
-- KEYS[5] chat sizes zset  KEYS[6] last-seen zset  KEYS[7] the address's registrations
-- KEYS[8] the name's skeleton reservation (skeleton -> user key)
-- ARGV[1] user key  ARGV[2] name as typed  ARGV[3] password hash  ARGV[4] general key
-- ARGV[5] registrations per address per hour (0: no limit)
-- Returns 1 when created, 0 when the nickname was taken meanwhile, -1 when the address
-- registered too many accounts this hour, -2 when another user holds a nickname that
-- looks the same (its skeleton).
local account_key, user_chats_key = KEYS[1], KEYS[2]
local general_members_key, general_key, sizes_key = KEYS[3], KEYS[4], KEYS[5]
local seen_key, registrations_key, skeleton_key = KEYS[6], KEYS[7], KEYS[8]
local user, name, password_hash, general = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_registrations = tonumber(ARGV[5])

if redis.call('EXISTS', account_key) == 1 then return 0 end
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
local now = now_ms()
local created = string.format('%d', math.floor(now / 1000))
redis.call('HSET', account_key, 'name', name, 'pw', password_hash, 'created', created)
redis.call('SADD', user_chats_key, general)
redis.call('SADD', general_members_key, user)
redis.call('HSETNX', general_key, 'name', general)
redis.call('ZADD', sizes_key, redis.call('SCARD', general_members_key), general)
redis.call('ZADD', seen_key, string.format('%d', now), user)
return 1

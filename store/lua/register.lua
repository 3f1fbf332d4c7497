-- register: create an account unless the nickname is taken; every user is in #general
-- (created, and active, if need be). The account records its creation time in seconds.
-- uses: time
--
-- KEYS[1] account hash  KEYS[2] user's chats  KEYS[3] #general members  KEYS[4] #general hash
-- KEYS[5] active chats set  KEYS[6] the name's skeleton reservation (skeleton -> user key)
-- ARGV[1] user key  ARGV[2] name as typed  ARGV[3] password hash  ARGV[4] general key
-- Returns 1 when created, 0 when the nickname was taken meanwhile, -1 when another user
-- holds a nickname that looks the same (its skeleton).
local account_key, user_chats_key = KEYS[1], KEYS[2]
local general_members_key, general_key, active_key = KEYS[3], KEYS[4], KEYS[5]
local user, name, password_hash, general = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local skeleton_key = KEYS[6]

if redis.call('EXISTS', account_key) == 1 then return 0 end
local look_alike = redis.call('GET', skeleton_key)
if look_alike and look_alike ~= user then return -1 end
redis.call('SET', skeleton_key, user)
local created = string.format('%d', math.floor(now_ms() / 1000))
redis.call('HSET', account_key, 'name', name, 'pw', password_hash, 'created', created)
redis.call('SADD', user_chats_key, general)
redis.call('SADD', general_members_key, user)
redis.call('HSETNX', general_key, 'name', general)
redis.call('SADD', active_key, general)
return 1

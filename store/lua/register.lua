-- register: create an account unless the nickname is taken (the user's slot; the caller
-- claimed the name's look with register_claim.lua first and afterwards adds the user to
-- #general and the last-seen list). The account records its creation time in seconds;
-- the user is in #general from the start.
-- uses: time
--
-- KEYS[1] account hash  KEYS[2] user's chats
-- ARGV[1] name as typed  ARGV[2] password hash  ARGV[3] general key
-- Returns 1 when created, 0 when the nickname was taken meanwhile.
local account_key, user_chats_key = KEYS[1], KEYS[2]
local name, password_hash, general = ARGV[1], ARGV[2], ARGV[3]

if redis.call('EXISTS', account_key) == 1 then return 0 end
local created = string.format('%d', math.floor(now_ms() / 1000))
redis.call('HSET', account_key, 'name', name, 'pw', password_hash, 'created', created)
redis.call('SADD', user_chats_key, general)
return 1

-- Remove a user from a chat; a chat with no member left stops being active.
-- KEYS[1] chat hash  KEYS[2] members  KEYS[3] user's chats  KEYS[4] active chats set
-- ARGV[1] user key  ARGV[2] chat key  ARGV[3] user channel  ARGV[4] origin session id
-- Returns {removed (0/1), chat display name}
local removed = redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[2])
if removed == 0 then return {0, ''} end
local name = redis.call('HGET', KEYS[1], 'name') or ARGV[2]
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[2])
  redis.call('DEL', KEYS[1])
end
redis.call('PUBLISH', ARGV[3], table.concat({'L', ARGV[2], name, ARGV[4]}, '\31'))
return {1, name}

-- Add a user to a chat, creating it (with the name as first typed) if it does not exist,
-- and tell every gateway holding one of the user's sessions.
-- KEYS[1] chat hash  KEYS[2] members  KEYS[3] user's chats  KEYS[4] active chats set
-- ARGV[1] user key  ARGV[2] chat key  ARGV[3] chat name as typed  ARGV[4] user channel
-- ARGV[5] origin session id
-- Returns {added (0/1), chat display name}
redis.call('HSETNX', KEYS[1], 'name', ARGV[3])
local name = redis.call('HGET', KEYS[1], 'name')
local added = redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
if added == 1 then
  redis.call('PUBLISH', ARGV[4], table.concat({'J', ARGV[2], name, ARGV[5]}, '\31'))
end
return {added, name}

-- join: add a user to a chat, creating it (with the name as first typed) if it does not
-- exist, mark the chat active, and tell every gateway holding one of the user's sessions.
-- uses: (none)
--
-- KEYS[1] chat hash  KEYS[2] members  KEYS[3] user's chats  KEYS[4] active chats set
-- ARGV[1] user key  ARGV[2] chat key  ARGV[3] chat name as typed  ARGV[4] user channel
-- ARGV[5] origin session id
-- Publishes, when the user was added, to the user channel, fields joined by \31:
--   J, chat key, chat display name, origin session id
-- Returns {added (0/1), chat display name}
local chat_key, members_key, user_chats_key, active_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, chat, typed, user_channel, origin = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

redis.call('HSETNX', chat_key, 'name', typed)
local name = redis.call('HGET', chat_key, 'name')
local added = redis.call('SADD', members_key, user)
redis.call('SADD', user_chats_key, chat)
redis.call('SADD', active_key, chat)
if added == 1 then
  redis.call('PUBLISH', user_channel, table.concat({'J', chat, name, origin}, '\31'))
end
return {added, name}

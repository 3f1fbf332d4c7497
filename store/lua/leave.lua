-- leave: remove a user from a chat and tell every gateway holding one of the user's
-- sessions; a chat with no member left stops being active and its hash is deleted.
-- uses: (none)
--
-- KEYS[1] chat hash  KEYS[2] members  KEYS[3] user's chats  KEYS[4] active chats set
-- ARGV[1] user key  ARGV[2] chat key  ARGV[3] user channel  ARGV[4] origin session id
-- Publishes, when the user was a member, to the user channel, fields joined by \31:
--   L, chat key, chat display name (the chat key if it has none), origin session id
-- Returns {1, chat display name} when removed, {0, ''} when the user was not a member
local chat_key, members_key, user_chats_key, active_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, chat, user_channel, origin = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local removed = redis.call('SREM', members_key, user)
redis.call('SREM', user_chats_key, chat)
if removed == 0 then return {0, ''} end
local name = redis.call('HGET', chat_key, 'name') or chat
if redis.call('SCARD', members_key) == 0 then
  redis.call('SREM', active_key, chat)
  redis.call('DEL', chat_key)
end
redis.call('PUBLISH', user_channel, table.concat({'L', chat, name, origin}, '\31'))
return {1, name}

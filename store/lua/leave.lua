-- leave: remove a user from a chat and tell every gateway holding one of the user's
-- sessions; the chat's member count is updated, and a chat with no member left is deleted.
-- uses: (none)
--
-- KEYS[1] chat hash  KEYS[2] members  KEYS[3] user's chats  KEYS[4] chat sizes zset
-- ARGV[1] user key  ARGV[2] chat key  ARGV[3] user channel  ARGV[4] origin session id
-- Publishes, when the user was a member, to the user channel, fields joined by \31:
--   L, chat key, chat display name (the chat key if it has none), origin session id
-- Returns {1, chat display name} when removed, {0, ''} when the user was not a member
local chat_key, members_key, user_chats_key, sizes_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, chat, user_channel, origin = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local removed = redis.call('SREM', members_key, user)
redis.call('SREM', user_chats_key, chat)
if removed == 0 then return {0, ''} end
local name = redis.call('HGET', chat_key, 'name') or chat
local left = redis.call('SCARD', members_key)
if left == 0 then
  redis.call('ZREM', sizes_key, chat)
  redis.call('DEL', chat_key)
else
  redis.call('ZADD', sizes_key, left, chat)
end
redis.call('PUBLISH', user_channel, table.concat({'L', chat, name, origin}, '\31'))
return {1, name}

-- leave: remove a user from a chat's members; a chat with no member left is deleted. Only
-- the chat's own keys (one cluster slot): the caller then updates the user's chats and
-- the chat list, and tells the user's gateways.
-- uses: (none)
--
-- KEYS[1] chat hash  KEYS[2] members
-- ARGV[1] user key  ARGV[2] chat key (the name when the chat has none)
-- Returns {1, chat display name, members left} when removed, {0, '', 0} when the user was
-- not a member
local chat_key, members_key = KEYS[1], KEYS[2]
local user, chat = ARGV[1], ARGV[2]

if redis.call('SREM', members_key, user) == 0 then return {0, '', 0} end
local name = redis.call('HGET', chat_key, 'name') or chat
local left = redis.call('SCARD', members_key)
if left == 0 then redis.call('DEL', chat_key) end
return {1, name, left}

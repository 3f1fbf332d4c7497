-- join: add a user to a chat's members, creating the chat (with the name as first typed)
-- if it does not exist. Only the chat's own keys (one cluster slot): the caller read the
-- user's and the global limits first and passes what they allow, and afterwards records
-- the chat in the user's chats and the chat list, and tells the user's gateways.
-- uses: (none)
--
-- KEYS[1] chat hash  KEYS[2] members
-- ARGV[1] user key  ARGV[2] chat name as typed
-- ARGV[3] may the user join one more chat: 1 | 0
-- ARGV[4] may the user create this chat: 'ok' | 'chat_limit' | 'create_rate'
-- Returns {status, chat display name, member count}: status 'already' | 'joined' |
--   'created' | 'user_limit' | 'chat_limit' | 'create_rate'
local chat_key, members_key = KEYS[1], KEYS[2]
local user, typed, may_join, may_create = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

if redis.call('SISMEMBER', members_key, user) == 1 then
  return {'already', redis.call('HGET', chat_key, 'name') or typed,
    redis.call('SCARD', members_key)}
end
if may_join ~= '1' then return {'user_limit', typed, 0} end
local status = 'joined'
if redis.call('EXISTS', members_key) == 0 then
  if may_create ~= 'ok' then return {may_create, typed, 0} end
  redis.call('DEL', chat_key)  -- a name left over from an emptied chat
  status = 'created'
end
redis.call('HSETNX', chat_key, 'name', typed)
redis.call('SADD', members_key, user)
return {status, redis.call('HGET', chat_key, 'name'), redis.call('SCARD', members_key)}

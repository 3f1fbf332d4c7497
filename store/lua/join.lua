-- join: add a user to a chat, creating it (with the name as first typed) if it does not
-- exist, record its member count, and tell every gateway holding one of the user's sessions.
-- Refused when the user is in too many chats, or creating a chat when too many exist or
-- the user created too many this hour.
-- uses: (none)
--
-- KEYS[1] chat hash  KEYS[2] members  KEYS[3] user's chats  KEYS[4] chat sizes zset
-- KEYS[5] user's chat creations this hour (counter)
-- ARGV[1] user key  ARGV[2] chat key  ARGV[3] chat name as typed  ARGV[4] user channel
-- ARGV[5] origin session id  ARGV[6] chats a user may be in  ARGV[7] chats that may exist
-- ARGV[8] chats a user may create per hour
-- Publishes, when the user was added, to the user channel, fields joined by \31:
--   J, chat key, chat display name, origin session id
-- Returns {'joined' | 'already', chat display name} | {'user_limit' | 'chat_limit' |
--   'create_rate', ''}
local chat_key, members_key, user_chats_key = KEYS[1], KEYS[2], KEYS[3]
local sizes_key, creations_key = KEYS[4], KEYS[5]
local user, chat, typed, user_channel, origin = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local max_user_chats, max_chats = tonumber(ARGV[6]), tonumber(ARGV[7])
local max_creations = tonumber(ARGV[8])

if redis.call('SISMEMBER', members_key, user) == 1 then
  redis.call('SADD', user_chats_key, chat)
  return {'already', redis.call('HGET', chat_key, 'name') or typed}
end
if redis.call('SCARD', user_chats_key) >= max_user_chats then return {'user_limit', ''} end
if redis.call('EXISTS', members_key) == 0 then
  if redis.call('ZCARD', sizes_key) >= max_chats then return {'chat_limit', ''} end
  local made = tonumber(redis.call('GET', creations_key) or '0')
  if made >= max_creations then return {'create_rate', ''} end
  if redis.call('INCR', creations_key) == 1 then redis.call('EXPIRE', creations_key, 3600) end
  redis.call('DEL', chat_key)  -- a name left over from an emptied chat
end
redis.call('HSETNX', chat_key, 'name', typed)
local name = redis.call('HGET', chat_key, 'name')
redis.call('SADD', members_key, user)
redis.call('SADD', user_chats_key, chat)
redis.call('ZADD', sizes_key, redis.call('SCARD', members_key), chat)
redis.call('PUBLISH', user_channel, table.concat({'J', chat, name, origin}, '\31'))
return {'joined', name}

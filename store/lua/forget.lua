-- forget: delete an account's own keys (the user's slot) and return the chats it was in,
-- so the caller takes it out of their member sets (leave.lua, each in its chat's slot)
-- and out of the shared lists. Nothing that grants anything survives it: a new account of
-- the same name starts with no resume token and no ban. The caller checked first that the
-- account was not seen since its cutoff.
-- uses: (none)
--
-- KEYS[1] account hash  KEYS[2] user's chats  KEYS[3..] every other key of the user
-- Returns the chat keys the user was in.
local account_key, user_chats_key = KEYS[1], KEYS[2]

local chats = redis.call('SMEMBERS', user_chats_key)
redis.call('DEL', unpack(KEYS))
return chats

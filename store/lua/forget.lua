-- forget: delete an account not seen since the cutoff, with every key of its own, and take
-- it out of its chats' member sets (a chat left empty is deleted). Nothing that grants
-- anything survives it: a new account of the same name starts with no moderator right,
-- no resume token and no ban entry. The user's chats are
-- bounded by the per-user chat limit, so one call's work is too. Member keys are built
-- from the prefix: a chat's keys are `<prefix><chat>` and `<prefix><chat>:members`.
-- uses: (none)
--
-- KEYS[1] last-seen zset  KEYS[2] chat sizes zset  KEYS[3] account hash  KEYS[4] user's chats
-- KEYS[5] peers  KEYS[6] cursors  KEYS[7] ban  KEYS[8] rate bucket  KEYS[9] complaints
-- KEYS[10] resume tokens  KEYS[11] moderators set  KEYS[12] bans zset
-- KEYS[13] the user's recent addresses  KEYS[14] the user's known addresses
-- ARGV[1] user key  ARGV[2] cutoff ms (seen at or before it: forget)  ARGV[3] chat prefix
-- Returns 1 when forgotten, 0 when the user was seen after the cutoff (or is unknown).
local seen_key, sizes_key, account_key, user_chats_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local peers_key, cursors_key, ban_key, rate_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local complaints_key = KEYS[9]
local tokens_key, moderators_key, bans_key = KEYS[10], KEYS[11], KEYS[12]
local addresses_key, known_key = KEYS[13], KEYS[14]
local user, cutoff, chat_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local seen = tonumber(redis.call('ZSCORE', seen_key, user))
if not seen or seen > cutoff then return 0 end
for _, chat in ipairs(redis.call('SMEMBERS', user_chats_key)) do
  local members_key = chat_prefix .. chat .. ':members'
  if redis.call('SREM', members_key, user) == 1 then
    local left = redis.call('SCARD', members_key)
    if left == 0 then
      redis.call('ZREM', sizes_key, chat)
      redis.call('DEL', chat_prefix .. chat)
    else
      redis.call('ZADD', sizes_key, left, chat)
    end
  end
end
redis.call('DEL', account_key, user_chats_key, peers_key, cursors_key, ban_key, rate_key,
  complaints_key, tokens_key, addresses_key, known_key)
redis.call('SREM', moderators_key, user)
redis.call('ZREM', bans_key, user)
redis.call('ZREM', seen_key, user)
return 1

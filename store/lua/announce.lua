-- announce: tell a chat's readers that a member came, parted or quit, only in a chat of
-- at most `max members` (a reconnect storm in a chat of 50,000 would otherwise be 50,000
-- deliveries per member). The chat's own keys (one cluster slot); nothing is stored.
-- uses: payload
--
-- KEYS[1] members
-- ARGV[1] max members  ARGV[2] channel  ARGV[3] publish command: PUBLISH or SPUBLISH
-- ARGV[4] change ('J' came, 'P' parted, 'Q' quit)  ARGV[5] user key  ARGV[6] user's name
-- ARGV[7] stamp  ARGV[8] reason
-- Publishes a P record (payload_fn.lua) when the chat is small enough.
-- Returns 1 when published, 0 when the chat is larger (or empty)
local members_key = KEYS[1]
local max_members, channel, publish = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local change, user, name, stamp, reason = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]

local size = redis.call('SCARD', members_key)
if size == 0 or size > max_members then return 0 end
redis.call(publish, channel, payload({presence_record(change, user, name, stamp, reason)}))
return 1

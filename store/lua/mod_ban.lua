-- mod_ban: a moderator's or an operator's ban: at once, for the given time, no complaints
-- needed (pending complaints about the target are cleared). Listed in the bans zset and
-- told to the target's gateways, as a ban after complaints is.
-- uses: time
--
-- KEYS[1] ban  KEYS[2] target's account hash  KEYS[3] bans zset (user -> ban end ms)
-- KEYS[4] complaints zset  KEYS[5] complaint addresses hash
-- ARGV[1] user key  ARGV[2] duration ms  ARGV[3] target channel
-- Publishes to the target channel: B \31 until_ms \31 m (m: by a moderator)
-- Returns {'nouser'} | {'ban', until_ms, name}
local ban_key, account_key, bans_key = KEYS[1], KEYS[2], KEYS[3]
local complaints_key, addresses_key = KEYS[4], KEYS[5]
local user, duration, target_channel = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local name = redis.call('HGET', account_key, 'name')
if not name then return {'nouser'} end
local now = now_ms()
local till = string.format('%d', now + duration)
redis.call('SET', ban_key, till, 'PX', duration)
redis.call('ZREMRANGEBYSCORE', bans_key, '-inf', string.format('%d', now))
redis.call('ZADD', bans_key, till, user)
redis.call('DEL', complaints_key, addresses_key)
redis.call('PUBLISH', target_channel, table.concat({'B', till, 'm'}, '\31'))
return {'ban', till, name}

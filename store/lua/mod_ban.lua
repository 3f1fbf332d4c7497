-- mod_ban: a moderator's or an operator's ban: at once, for the given time, no complaints
-- needed (pending complaints about the target are cleared); told to the target's
-- gateways, as a ban after complaints is. Only the target's keys (one cluster slot): the
-- caller lists the ban in the bans zset afterwards. Unlike a ban after complaints it holds
-- no address back from registering: a person decided it about one account, and the
-- people who share that account's addresses did nothing.
-- uses: time, payload
--
-- KEYS[1] ban  KEYS[2] target's account hash  KEYS[3] complaints zset
-- KEYS[4] complaint addresses hash
-- ARGV[1] duration ms  ARGV[2] target channel
-- ARGV[3] publish command: PUBLISH (standalone) or SPUBLISH (cluster)
-- Publishes to the target channel a B record by a moderator (payload_fn.lua): until_ms, m
-- Returns {'nouser'} | {'ban', until_ms, name}
local ban_key, account_key, complaints_key, addresses_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local duration, target_channel, publish = tonumber(ARGV[1]), ARGV[2], ARGV[3]

local name = redis.call('HGET', account_key, 'name')
if not name then return {'nouser'} end
local till = string.format('%d', now_ms() + duration)
redis.call('SET', ban_key, till, 'PX', duration)
redis.call('DEL', complaints_key, addresses_key)
redis.call(publish, target_channel, payload({banned_record(till, true)}))
return {'ban', till, name}

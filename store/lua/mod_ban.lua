-- mod_ban: a moderator's or an operator's ban: at once, for the given time, no complaints
-- needed (pending complaints about the target are cleared); told to the target's
-- gateways, as a ban after complaints is. Only the target's keys (one cluster slot): the
-- caller lists the ban in the bans zset afterwards and holds the returned addresses back
-- from registering until it ends (as complain.lua's ban does).
-- uses: time, payload
--
-- KEYS[1] ban  KEYS[2] target's account hash  KEYS[3] complaints zset
-- KEYS[4] complaint addresses hash  KEYS[5] target's addresses (addr -> ms)
-- ARGV[1] duration ms  ARGV[2] target channel
-- ARGV[3] publish command: PUBLISH (standalone) or SPUBLISH (cluster)
-- Publishes to the target channel a B record by a moderator (payload_fn.lua): until_ms, m
-- Returns {'nouser'} | {'ban', until_ms, name, the target's recent addresses...}
local ban_key, account_key, complaints_key, addresses_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local target_addresses_key = KEYS[5]
local duration, target_channel, publish = tonumber(ARGV[1]), ARGV[2], ARGV[3]

local name = redis.call('HGET', account_key, 'name')
if not name then return {'nouser'} end
local till = string.format('%d', now_ms() + duration)
redis.call('SET', ban_key, till, 'PX', duration)
redis.call('DEL', complaints_key, addresses_key)
redis.call(publish, target_channel, payload({banned_record(till, true)}))
local out = {'ban', till, name}
for _, held in ipairs(redis.call('ZRANGE', target_addresses_key, 0, -1)) do
  out[#out + 1] = held
end
return out

-- complain: record a complaint against a user (one per complainer, each counted for a
-- ban duration); at the threshold, ban the user for that duration, clear the complaints,
-- hold the target's recent addresses back from registering until the ban ends, and tell
-- the target's gateways. A complaint counts only from an account old enough, within the
-- complainer's hourly allowance, and once per complainer address (per_address) per target.
-- uses: time
--
-- KEYS[1] complaints zset (complainer -> ms)  KEYS[2] ban  KEYS[3] target's account hash
-- KEYS[4] complainer's account hash  KEYS[5] complainer's recent complaints (target -> ms)
-- KEYS[6] complaint addresses hash (address -> count)  KEYS[7] target's addresses (addr -> ms)
-- KEYS[8] held addresses zset (address -> ban end ms)  KEYS[9] bans zset (user -> ban end ms)
-- ARGV[1] complainer key  ARGV[2] threshold  ARGV[3] ban duration ms  ARGV[4] target channel
-- ARGV[5] complainer's address  ARGV[6] minimum account age ms (0: none)
-- ARGV[7] complaints per complainer per hour (0: no limit)
-- ARGV[8] complaints counted per address per target (0: no limit)  ARGV[9] target key
-- Publishes, on a ban, to the target channel: B \31 until_ms
-- Returns {'nouser'} | {'banned', until_ms} | {'again', count} | {'ok', count}
--       | {'ban', count, until_ms} | {'young', wait_ms} | {'rate', wait_ms}
--       | {'address', count}; the target's display name is appended to all but nouser.
local complaints_key, ban_key, account_key = KEYS[1], KEYS[2], KEYS[3]
local complainer_key, recent_key, addresses_key = KEYS[4], KEYS[5], KEYS[6]
local target_addresses_key, held_key, bans_key = KEYS[7], KEYS[8], KEYS[9]
local complainer, threshold, duration = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local target_channel, address = ARGV[4], ARGV[5]
local target = ARGV[9]
local min_age, per_hour, per_address = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local HOUR = 3600000

local name = redis.call('HGET', account_key, 'name')
if not name then return {'nouser'} end
local banned = redis.call('GET', ban_key)
if banned then return {'banned', banned, name} end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', complaints_key, '-inf', string.format('%d', now - duration))
if redis.call('ZSCORE', complaints_key, complainer) then
  return {'again', redis.call('ZCARD', complaints_key), name}
end
if min_age > 0 then
  local created = tonumber(redis.call('HGET', complainer_key, 'created') or '0')
  local wait = created * 1000 + min_age - now
  if wait > 0 then return {'young', string.format('%d', wait), name} end
end
if per_hour > 0 then
  redis.call('ZREMRANGEBYSCORE', recent_key, '-inf', string.format('%d', now - HOUR))
  if redis.call('ZCARD', recent_key) >= per_hour then
    local oldest = redis.call('ZRANGE', recent_key, 0, 0, 'WITHSCORES')
    return {'rate', string.format('%d', tonumber(oldest[2]) + HOUR - now), name}
  end
end
if per_address > 0 then
  if tonumber(redis.call('HGET', addresses_key, address) or '0') >= per_address then
    return {'address', redis.call('ZCARD', complaints_key), name}
  end
  -- counted until a ban period passes without complaints about the target, or a ban
  redis.call('HINCRBY', addresses_key, address, 1)
  redis.call('PEXPIRE', addresses_key, duration)
end
if per_hour > 0 then
  redis.call('ZADD', recent_key, string.format('%d', now), target_channel)  -- one per target
  redis.call('PEXPIRE', recent_key, HOUR)
end
redis.call('ZADD', complaints_key, string.format('%d', now), complainer)
redis.call('PEXPIRE', complaints_key, duration)
local count = redis.call('ZCARD', complaints_key)
if count >= threshold then
  local till = string.format('%d', now + duration)
  redis.call('SET', ban_key, till, 'PX', duration)
  redis.call('ZREMRANGEBYSCORE', bans_key, '-inf', string.format('%d', now))
  redis.call('ZADD', bans_key, till, target)
  redis.call('DEL', complaints_key, addresses_key)
  redis.call('ZREMRANGEBYSCORE', held_key, '-inf', string.format('%d', now))
  for _, held in ipairs(redis.call('ZRANGE', target_addresses_key, 0, -1)) do
    redis.call('ZADD', held_key, 'GT', till, held)
  end
  redis.call('PUBLISH', target_channel, table.concat({'B', till}, '\31'))
  return {'ban', count, till, name}
end
return {'ok', count, name}

-- complain: record a complaint against a user (one per complainer, each counted for a
-- ban duration); at the threshold, ban the user for that duration, clear the complaints,
-- and tell the target's gateways. A complaint counts only from an account old enough,
-- within the complainer's hourly allowance, and once per complainer address
-- (per_address) per target. Only the target's keys (one cluster slot): the caller reads
-- the complainer's age and allowance first and passes the waits, and afterwards records
-- the complaint in the complainer's allowance and, on a ban, lists the ban and holds the
-- returned addresses back from registering until it ends.
-- uses: time, payload
--
-- KEYS[1] complaints zset (complainer -> ms)  KEYS[2] ban  KEYS[3] target's account hash
-- KEYS[4] complaint addresses hash (address -> count)  KEYS[5] target's addresses (addr -> ms)
-- ARGV[1] complainer key  ARGV[2] threshold  ARGV[3] ban duration ms  ARGV[4] target channel
-- ARGV[5] complainer's address  ARGV[6] ms until the complainer's account is old enough
-- (0: it is)  ARGV[7] ms until the complainer may complain again this hour (0: now)
-- ARGV[8] complaints counted per address per target (0: no limit)
-- ARGV[9] publish command: PUBLISH (standalone) or SPUBLISH (cluster)
-- Publishes, on a ban, to the target channel a B record (payload_fn.lua): until_ms
-- Returns {'nouser'} | {'banned', until_ms} | {'again', count} | {'ok', count}
--       | {'ban', count, until_ms} | {'young', wait_ms} | {'rate', wait_ms}
--       | {'address', count}; the target's display name is appended to all but nouser,
--       and after it, on 'ban', the target's recent addresses.
local complaints_key, ban_key, account_key = KEYS[1], KEYS[2], KEYS[3]
local addresses_key, target_addresses_key = KEYS[4], KEYS[5]
local complainer, threshold, duration = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local target_channel, address = ARGV[4], ARGV[5]
local young_wait, rate_wait = tonumber(ARGV[6]), tonumber(ARGV[7])
local per_address, publish = tonumber(ARGV[8]), ARGV[9]

local name = redis.call('HGET', account_key, 'name')
if not name then return {'nouser'} end
local banned = redis.call('GET', ban_key)
if banned then return {'banned', banned, name} end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', complaints_key, '-inf', string.format('%d', now - duration))
if redis.call('ZSCORE', complaints_key, complainer) then
  return {'again', redis.call('ZCARD', complaints_key), name}
end
if young_wait > 0 then return {'young', string.format('%d', young_wait), name} end
if rate_wait > 0 then return {'rate', string.format('%d', rate_wait), name} end
if per_address > 0 then
  if tonumber(redis.call('HGET', addresses_key, address) or '0') >= per_address then
    return {'address', redis.call('ZCARD', complaints_key), name}
  end
  -- counted until a ban period passes without complaints about the target, or a ban
  redis.call('HINCRBY', addresses_key, address, 1)
  redis.call('PEXPIRE', addresses_key, duration)
end
redis.call('ZADD', complaints_key, string.format('%d', now), complainer)
redis.call('PEXPIRE', complaints_key, duration)
local count = redis.call('ZCARD', complaints_key)
if count >= threshold then
  local till = string.format('%d', now + duration)
  redis.call('SET', ban_key, till, 'PX', duration)
  redis.call('DEL', complaints_key, addresses_key)
  redis.call(publish, target_channel, payload({banned_record(till, false)}))
  local out = {'ban', count, till, name}
  for _, held in ipairs(redis.call('ZRANGE', target_addresses_key, 0, -1)) do
    out[#out + 1] = held
  end
  return out
end
return {'ok', count, name}

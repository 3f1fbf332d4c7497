-- complain: record a complaint against a user (one per complainer, each counted for a
-- ban duration); at the threshold, ban the user for that duration, clear the complaints
-- and tell the target's gateways.
-- uses: time
--
-- KEYS[1] complaints zset (complainer -> ms)  KEYS[2] ban  KEYS[3] target's account hash
-- ARGV[1] complainer key  ARGV[2] threshold  ARGV[3] ban duration ms  ARGV[4] target channel
-- Publishes, on a ban, to the target channel: B \31 until_ms
-- Returns {'nouser'} | {'banned', until_ms} | {'again', count} | {'ok', count}
--       | {'ban', count, until_ms}; the target's display name is appended to all but nouser.
local complaints_key, ban_key, account_key = KEYS[1], KEYS[2], KEYS[3]
local complainer, threshold, duration = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local target_channel = ARGV[4]

local name = redis.call('HGET', account_key, 'name')
if not name then return {'nouser'} end
local banned = redis.call('GET', ban_key)
if banned then return {'banned', banned, name} end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', complaints_key, '-inf', string.format('%d', now - duration))
if redis.call('ZSCORE', complaints_key, complainer) then
  return {'again', redis.call('ZCARD', complaints_key), name}
end
redis.call('ZADD', complaints_key, string.format('%d', now), complainer)
redis.call('PEXPIRE', complaints_key, duration)
local count = redis.call('ZCARD', complaints_key)
if count >= threshold then
  local till = string.format('%d', now + duration)
  redis.call('SET', ban_key, till, 'PX', duration)
  redis.call('DEL', complaints_key)
  redis.call('PUBLISH', target_channel, table.concat({'B', till}, '\31'))
  return {'ban', count, till, name}
end
return {'ok', count, name}

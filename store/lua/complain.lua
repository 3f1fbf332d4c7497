-- Record a complaint; at the threshold, ban the user and clear the complaints.
-- KEYS[1] complaints zset (complainer -> ms)  KEYS[2] ban  KEYS[3] target's account hash
-- ARGV[1] complainer key  ARGV[2] threshold  ARGV[3] ban duration ms  ARGV[4] target channel
-- Returns {'nouser'} | {'banned', until_ms} | {'again', count} | {'ok', count}
--       | {'ban', count, until_ms}; the target's display name is appended to all but nouser.
local name = redis.call('HGET', KEYS[3], 'name')
if not name then return {'nouser'} end
local banned = redis.call('GET', KEYS[2])
if banned then return {'banned', banned, name} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local duration = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - duration))
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {'again', redis.call('ZCARD', KEYS[1]), name}
end
redis.call('ZADD', KEYS[1], string.format('%d', now), ARGV[1])
redis.call('PEXPIRE', KEYS[1], duration)
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[2]) then
  local till = string.format('%d', now + duration)
  redis.call('SET', KEYS[2], till, 'PX', duration)
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[4], table.concat({'B', till}, '\31'))
  return {'ban', count, till, name}
end
return {'ok', count, name}

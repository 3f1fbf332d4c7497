-- address_gate: the per-address login limit (the `{g}` slot): at most `limit` distinct
-- nicknames may fail from one address in the window, counted only where the nickname
-- never logged in from that address (login_gate.lua says so first). One user's typos
-- count once; a NAT is not locked by one person. With take = 1 the nickname is recorded
-- in the same step as the check, so parallel attempts cannot overshoot the limit.
-- uses: time
--
-- KEYS[1] the address's failed nicknames (zset nickname -> ms)
-- ARGV[1] nickname  ARGV[2] window s  ARGV[3] nicknames per address (0: no limit)
-- ARGV[4] 1: take, 0: peek
-- Returns {'ok', 0} or {'address', ms until the limit lets one more in}.
local address_key = KEYS[1]
local nick, window_ms = ARGV[1], tonumber(ARGV[2]) * 1000
local limit, take = tonumber(ARGV[3]), ARGV[4]

local now = now_ms()
redis.call('ZREMRANGEBYSCORE', address_key, '-inf', now - window_ms)
if limit > 0 and not redis.call('ZSCORE', address_key, nick)
    and redis.call('ZCARD', address_key) >= limit then
  local oldest = redis.call('ZRANGE', address_key, 0, 0, 'WITHSCORES')
  return {'address', math.max(1, tonumber(oldest[2]) + window_ms - now)}
end
if take == '1' then
  redis.call('ZADD', address_key, now, nick)
  redis.call('PEXPIRE', address_key, window_ms)
end
return {'ok', 0}

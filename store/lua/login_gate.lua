-- login_gate: may a login attempt be checked (a password verified, a token looked up)?
-- With take = 1 the attempt is counted as a failure now, before the check, so parallel
-- attempts cannot all pass one earlier look at the counters; a login that succeeds is
-- forgiven by the store's `seen`. Three limits, each 0 for none:
--   per (nickname, address): the strict one;
--   per nickname, counting only addresses it never logged in from (an attacker elsewhere
--   cannot lock the owner out of their usual address);
--   per address, distinct nicknames that failed from it, again only where that nickname
--   never logged in (one user's typos count once; a NAT is not locked by one person).
-- uses: time
--
-- KEYS[1] pair counter  KEYS[2] nickname counter  KEYS[3] address's failed nicknames (zset)
-- KEYS[4] the nickname's known addresses (zset address -> ms of the last login there)
-- ARGV[1] nickname  ARGV[2] address  ARGV[3] window s  ARGV[4] pair limit
-- ARGV[5] nickname limit  ARGV[6] nicknames per address  ARGV[7] ms an address stays known
-- ARGV[8] 1: take (count the attempt), 0: peek (only say whether it would be allowed)
-- Returns {'ok', 0} or {'pair' | 'nick' | 'address', ms until that limit lets one more in}.
local pair_key, nick_key, address_key, known_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local nick, address, window_s = ARGV[1], ARGV[2], tonumber(ARGV[3])
local pair_limit, nick_limit, address_limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local known_ms, take = tonumber(ARGV[7]), ARGV[8]

local now = now_ms()
local window_ms = window_s * 1000

local function wait(key)
  local left = redis.call('PTTL', key)
  if left < 0 then return window_ms end
  return left
end

local function count(key)
  return tonumber(redis.call('GET', key) or '0')
end

if pair_limit > 0 and count(pair_key) >= pair_limit then return {'pair', wait(pair_key)} end
local seen_at = tonumber(redis.call('ZSCORE', known_key, address))
local known = seen_at ~= nil and seen_at > now - known_ms
if not known then
  if nick_limit > 0 and count(nick_key) >= nick_limit then return {'nick', wait(nick_key)} end
  redis.call('ZREMRANGEBYSCORE', address_key, '-inf', now - window_ms)
  if address_limit > 0 and not redis.call('ZSCORE', address_key, nick)
      and redis.call('ZCARD', address_key) >= address_limit then
    local oldest = redis.call('ZRANGE', address_key, 0, 0, 'WITHSCORES')
    return {'address', math.max(1, tonumber(oldest[2]) + window_ms - now)}
  end
end
if take ~= '1' then return {'ok', 0} end

local function incr(key)
  if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, window_s) end
end

incr(pair_key)
if not known then
  incr(nick_key)
  redis.call('ZADD', address_key, now, nick)
  redis.call('PEXPIRE', address_key, window_ms)
end
return {'ok', 0}

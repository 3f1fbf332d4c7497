-- login_gate: may a login attempt be checked (a password verified, a token looked up)?
-- With take = 1 the attempt is counted as a failure now, before the check, so parallel
-- attempts cannot all pass one earlier look at the counters; a login that succeeds is
-- forgiven by the store's `seen`. The nickname's limits, each 0 for none:
--   per (nickname, address): the strict one;
--   per nickname, counting only addresses it never logged in from (an attacker elsewhere
--   cannot lock the owner out of their usual address).
-- Only the nickname's keys (one cluster slot). The third limit, distinct nicknames that
-- failed from one address, is address_gate.lua's, run by the caller after this one when
-- the address is not known to the nickname (the reply says so).
-- uses: time
--
-- KEYS[1] pair counter  KEYS[2] nickname counter
-- KEYS[3] the nickname's known addresses (zset address -> ms of the last login there)
-- ARGV[1] address  ARGV[2] window s  ARGV[3] pair limit  ARGV[4] nickname limit
-- ARGV[5] ms an address stays known
-- ARGV[6] 1: take (count the attempt), 0: peek (only say whether it would be allowed)
-- Returns {'ok', known (1 | 0)} or {'pair' | 'nick', ms until that limit lets one more in}.
local pair_key, nick_key, known_key = KEYS[1], KEYS[2], KEYS[3]
local address, window_s = ARGV[1], tonumber(ARGV[2])
local pair_limit, nick_limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local known_ms, take = tonumber(ARGV[5]), ARGV[6]

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
if not known and nick_limit > 0 and count(nick_key) >= nick_limit then
  return {'nick', wait(nick_key)}
end
if take == '1' then
  local function incr(key)
    if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, window_s) end
  end
  incr(pair_key)
  if not known then incr(nick_key) end
end
return {'ok', known and 1 or 0}

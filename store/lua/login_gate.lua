-- login_gate: may a login attempt be checked (a password verified, a token looked up)?
-- With take = 1 the attempt is counted as a failure now, before the check, so parallel
-- attempts cannot all pass one earlier look at the counters; a login that succeeds is
-- forgiven by enter.lua. The nickname's limits, each 0 for none:
--   per (nickname, address): the strict one;
--   per nickname, counting only addresses it never logged in from (an attacker elsewhere
--   cannot lock the owner out of their usual address).
-- Only the nickname's keys (one cluster slot). The third limit, distinct nicknames that
-- failed from one address, is address_gate.lua's, run by the caller after this one when
-- the address is not known to the nickname (the reply says so).
-- uses: gate
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

return login_gate(pair_key, nick_key, known_key, address, window_s, pair_limit, nick_limit,
                  known_ms, take)

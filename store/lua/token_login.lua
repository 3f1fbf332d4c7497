-- token_login: a login with a resume token in one call (a reconnect storm is thousands).
-- The token is looked at first: 256 random bits are not guessed, so a valid one logs in
-- whatever the failure counters say (an attacker behind the owner's address cannot lock
-- a token out), and is entered as enter.lua does, except that the address's failures are
-- forgiven only while under the limit. A wrong one counts as a failed login,
-- by the nickname's limits (login_gate.lua's); the address's own limit is another slot
-- (address_gate.lua): the reply says when the caller must count it there too.
-- uses: gate, token, enter
--
-- KEYS[1] pair counter  KEYS[2] nickname counter  KEYS[3] known addresses
-- KEYS[4] tokens  KEYS[5] account  KEYS[6] held addresses  KEYS[7] chats  KEYS[8] peers
-- KEYS[9] cursors  KEYS[10] ban
-- ARGV[1] address  ARGV[2] window s  ARGV[3] pair limit  ARGV[4] nickname limit
-- ARGV[5] ms an address stays known  ARGV[6] token hash
-- ARGV[7] known addresses kept  ARGV[8] held addresses kept  ARGV[9] seconds remembered
-- Returns {'ok', name, chats, peers, cursors (field, value, ...), ban end ms or nil};
-- for a wrong token {'bad', 1 if the address is new to the nickname else 0}, or the
-- gate's {'pair' | 'nick', ms} when it refuses (the nickname is locked from here).
local pair_key, nick_key, known_key = KEYS[1], KEYS[2], KEYS[3]
local tokens_key, account_key, held_key = KEYS[4], KEYS[5], KEYS[6]
local chats_key, peers_key, cursors_key, ban_key = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local address, window_s = ARGV[1], tonumber(ARGV[2])
local pair_limit, nick_limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local known_ms, token_hash = tonumber(ARGV[5]), ARGV[6]
local known_keep, held_keep, memory_s = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])

local name = token_name(tokens_key, account_key, token_hash)
if name then
  -- forgiven only below the limit: a token login must not reopen the password guessing
  -- of someone behind the same address who reached it
  local failed = tonumber(redis.call('GET', pair_key) or '0')
  local forgive = pair_limit == 0 or failed < pair_limit
  local state = enter(pair_key, known_key, held_key, chats_key, peers_key, cursors_key,
                      ban_key, address, known_keep, held_keep, memory_s, forgive)
  return {'ok', name, state[1], state[2], state[3], state[4]}
end
local verdict = login_gate(pair_key, nick_key, known_key, address, window_s, pair_limit,
                           nick_limit, known_ms, '1')
if verdict[1] ~= 'ok' then return verdict end
return {'bad', 1 - verdict[2]}

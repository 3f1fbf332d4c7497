-- enter: a user logged in from an address (a password checked, or just registered):
-- forgive the attempts from there, remember the address, and return the user's state.
-- uses: enter
--
-- KEYS[1] pair counter (user, address)  KEYS[2] the nickname's known addresses
-- KEYS[3] the addresses a ban holds back  KEYS[4] the user's chats  KEYS[5] peers
-- KEYS[6] cursors  KEYS[7] ban
-- ARGV[1] address  ARGV[2] known addresses kept  ARGV[3] held addresses kept (0: none)
-- ARGV[4] seconds both are remembered
-- Returns {chats, peers, cursors (field, value, ...), ban end ms or nil}.
local pair_key, known_key, held_key = KEYS[1], KEYS[2], KEYS[3]
local chats_key, peers_key, cursors_key, ban_key = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local address, known_keep = ARGV[1], tonumber(ARGV[2])
local held_keep, memory_s = tonumber(ARGV[3]), tonumber(ARGV[4])

return enter(pair_key, known_key, held_key, chats_key, peers_key, cursors_key, ban_key,
             address, known_keep, held_keep, memory_s, true)

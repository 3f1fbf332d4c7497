-- advance: move a user's read cursors forward, never back (two gateways may flush out of
-- order), and expire the hash a lifetime after the last move.
-- uses: (none)
--
-- KEYS[1] cursor hash (conversation id -> stream id)   ARGV[1] lifetime ms
-- ARGV[2..] pairs of conversation id, stream id
-- Returns 1
local cursors_key, lifetime_ms = KEYS[1], ARGV[1]

-- Is stream id a after b (b missing or not an id: yes)?
local function newer(a, b)
  if not b then return true end
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not bms then return true end
  ams, bms = tonumber(ams), tonumber(bms)
  if ams ~= bms then return ams > bms end
  return tonumber(aseq) > tonumber(bseq)
end

for i = 2, #ARGV, 2 do
  local conv, id = ARGV[i], ARGV[i + 1]
  if newer(id, redis.call('HGET', cursors_key, conv)) then
    redis.call('HSET', cursors_key, conv, id)
  end
end
-- A cursor older than the lifetime points at nothing that still exists.
redis.call('PEXPIRE', cursors_key, lifetime_ms)
return 1

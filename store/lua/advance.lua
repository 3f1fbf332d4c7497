-- Move a user's read cursors forward (never back: two gateways may flush out of order).
-- KEYS[1] cursor hash   ARGV[1] lifetime ms   ARGV[2..] pairs of conversation id, stream id
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
  if newer(ARGV[i + 1], redis.call('HGET', KEYS[1], ARGV[i])) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
-- A cursor older than the lifetime points at nothing that still exists.
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1

-- token_issue: store a new resume token's hash with its expiry, revoking the one it
-- replaces (the same device's previous token), dropping expired ones, and keeping at most
-- ARGV[4] (the ones that expire first go). The hash lives as long as its last token.
-- uses: time
--
-- KEYS[1] the user's tokens hash
-- ARGV[1] new token hash  ARGV[2] lifetime ms  ARGV[3] replaced token hash or ''
-- ARGV[4] most tokens kept per user
-- Returns the new token's expiry (unix ms).
local tokens_key = KEYS[1]
local new_hash, ttl_ms, replaced, keep = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])

local now = now_ms()
if replaced ~= '' then redis.call('HDEL', tokens_key, replaced) end
local all = redis.call('HGETALL', tokens_key)
local live = {}
local last = now + ttl_ms
for i = 1, #all, 2 do
  local expiry = tonumber(all[i + 1]) or 0
  if expiry <= now then
    redis.call('HDEL', tokens_key, all[i])
  else
    live[#live + 1] = {all[i], expiry}
    if expiry > last then last = expiry end
  end
end
if #live >= keep then
  table.sort(live, function(a, b) return a[2] < b[2] end)
  for i = 1, #live - keep + 1 do redis.call('HDEL', tokens_key, live[i][1]) end
end
local expiry = now + ttl_ms
redis.call('HSET', tokens_key, new_hash, string.format('%d', expiry))
redis.call('PEXPIREAT', tokens_key, string.format('%d', last))
return expiry

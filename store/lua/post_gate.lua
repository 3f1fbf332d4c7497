-- post_gate: on a Redis Cluster, may a sender post n messages now? Checks the sender's ban
-- and takes one token per message from the sender's bucket, in the sender's slot, before
-- post_many.lua or post_private.lua stores the accepted ones in the conversation's slot.
-- (On a standalone Redis those scripts make these checks themselves, in the same step.)
-- uses: time, bucket
--
-- KEYS[1] sender's ban  KEYS[2] sender's rate bucket
-- ARGV[1] rate per second (0: off)  ARGV[2] burst  ARGV[3] messages
-- Returns a flat list, a status and a value per message, in order:
--   'ok', '' | 'banned', until_ms | 'rate', retry_ms
local ban_key, bucket_key = KEYS[1], KEYS[2]
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local out = {}
local banned = redis.call('GET', ban_key)
if banned then
  for _ = 1, n do out[#out + 1], out[#out + 2] = 'banned', banned end
  return out
end
local bucket = nil
if rate > 0 then bucket = bucket_load(bucket_key, now_ms(), rate, burst) end
for _ = 1, n do
  local retry = bucket and bucket_take(bucket)
  if retry then
    out[#out + 1], out[#out + 2] = 'rate', retry
  else
    out[#out + 1], out[#out + 2] = 'ok', ''
  end
end
if bucket then bucket_save(bucket) end
return out

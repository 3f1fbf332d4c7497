-- post_many: many chat messages into one chat at once, the gateway's batch of one loop
-- turn from any number of users. Each message is checked (membership, ban, rate) and
-- stored in order with an id from the shared clock; the stream is trimmed (to the lifetime,
-- then exactly to the newest `max stored` messages) and expired once,
-- and all accepted messages are published as one payload, so every gateway parses and fans
-- them out as one burst. Membership and ban are read once per sender; each sender's bucket
-- is read once and written back once, at the end.
-- uses: time, clock, bucket
--
-- KEYS[1] stream  KEYS[2] members  KEYS[3] message clock
-- then for message i (1-based): KEYS[2 + 2i] sender's ban, KEYS[3 + 2i] sender's rate bucket
-- ARGV[1] chat name  ARGV[2] lifetime ms  ARGV[3] rate per second (0: off)  ARGV[4] burst
-- ARGV[5] conversation id  ARGV[6] channel  ARGV[7] messages kept per conversation
-- then for message i: ARGV[5 + 3i] sender key, ARGV[6 + 3i] sender name, ARGV[7 + 3i] text
-- Publishes (when any message was accepted) to the channel one record per accepted message,
-- records joined by \30, fields by \31: M, id, conversation id, sender name, chat name, text.
-- Returns a flat list, a status and a value per message, in order:
--   'ok', id | 'banned', until_ms | 'rate', retry_ms | 'nomember', ''
local stream_key, members_key, clock_key = KEYS[1], KEYS[2], KEYS[3]
local chat_name, ttl = ARGV[1], tonumber(ARGV[2])
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local conv, channel, max_stored = ARGV[5], ARGV[6], ARGV[7]
local n = (#ARGV - 7) / 3

local now = now_ms()
local clock = clock_open(clock_key, now)
local member, banned, buckets = {}, {}, {}
local out, records = {}, {}
for i = 1, n do
  local ban_key, bucket_key = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local user, name, text = ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  if member[user] == nil then
    member[user] = redis.call('SISMEMBER', members_key, user) == 1
  end
  if banned[user] == nil then
    banned[user] = redis.call('GET', ban_key) or false
  end
  local ok = true
  if not member[user] then
    out[#out + 1], out[#out + 2] = 'nomember', ''
    ok = false
  elseif banned[user] then
    out[#out + 1], out[#out + 2] = 'banned', banned[user]
    ok = false
  elseif rate > 0 then
    local bucket = buckets[user]
    if not bucket then
      bucket = bucket_load(bucket_key, now, rate, burst)
      buckets[user] = bucket
    end
    local retry = bucket_take(bucket)
    if retry then
      out[#out + 1], out[#out + 2] = 'rate', retry
      ok = false
    end
  end
  if ok then
    local id = clock_next(clock)
    redis.call('XADD', stream_key, id, 'n', name, 't', text)
    records[#records + 1] = table.concat({'M', id, conv, name, chat_name, text}, '\31')
    out[#out + 1], out[#out + 2] = 'ok', id
  end
end

if #records > 0 then
  clock_save(clock)
  redis.call('XTRIM', stream_key, 'MINID', string.format('%d', now - ttl))
  redis.call('XTRIM', stream_key, 'MAXLEN', max_stored)
  redis.call('PEXPIRE', stream_key, ttl)
  redis.call('PUBLISH', channel, table.concat(records, '\30'))
end
for _, bucket in pairs(buckets) do
  bucket_save(bucket)
end
return out

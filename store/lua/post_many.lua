-- post_many: many chat messages into one chat at once, the gateway's batch of one loop
-- turn from any number of users. Each message is checked (membership; on a standalone
-- Redis also ban and rate) and stored in order with an id from the server clock
-- (xadd_fn.lua: to the microsecond, never lower than the stream's last);
-- the stream is trimmed (to the lifetime, then exactly to the newest `max stored`
-- messages) and expired once, and all accepted messages are published as one payload, so
-- every gateway parses and fans them out as one burst. Membership and ban are read once
-- per sender; each sender's bucket is read once and written back once, at the end.
-- On a Redis Cluster the senders' ban and bucket live in their own slots: the gateway
-- checks them first with post_gate.lua and passes no sender keys here.
-- uses: time, bucket, xadd, payload
--
-- KEYS[1] stream  KEYS[2] members
-- then, when senders are checked here, for message i (1-based): KEYS[1 + 2i] sender's ban,
-- KEYS[2 + 2i] sender's rate bucket
-- ARGV[1] chat name  ARGV[2] lifetime ms  ARGV[3] rate per second (0: off)  ARGV[4] burst
-- ARGV[5] conversation id  ARGV[6] channel  ARGV[7] messages kept per conversation
-- ARGV[8] publish command: PUBLISH (standalone) or SPUBLISH (cluster)
-- ARGV[9] arguments per message, s: 3 when every message of the call is a plain one, else 5
-- then for message i, from b = 9 + s(i - 1): ARGV[b + 1] sender key, ARGV[b + 2] sender
-- name, ARGV[b + 3] text, and when s = 5: ARGV[b + 4] kind ('' a message, 'N' a notice),
-- ARGV[b + 5] client tags ('' none); b is `at + stride * i` below. Three arguments, not
-- five, for the usual batch: less to encode and to send (docs/PERFORMANCE.md).
-- A notice is stored with a field k = 'N', client tags with g = tags (neither when plain).
-- Publishes (when any message was accepted) to the channel one payload, a message record
-- per accepted message (payload_fn.lua): id, conversation id, sender name, chat name, text.
-- Returns a flat list, a status and a value per message, in order:
--   'ok', id | 'banned', until_ms | 'rate', retry_ms | 'nomember', ''
local stream_key, members_key = KEYS[1], KEYS[2]
local chat_name, ttl = ARGV[1], tonumber(ARGV[2])
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local conv, channel, max_stored, publish = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local stride = tonumber(ARGV[9])
local n, at = (#ARGV - 9) / stride, 9 - stride  -- message i's arguments: at + stride * i + k
local checked = #KEYS > 2

local now = now_ms()
local member, banned, buckets = {}, {}, {}
local out, records = {}, {}
for i = 1, n do
  local user, name = ARGV[at + stride * i + 1], ARGV[at + stride * i + 2]
  local text = ARGV[at + stride * i + 3]
  local kind, tags = ARGV[at + stride * i + 4], ARGV[at + stride * i + 5]
  if stride == 3 then  -- those two were the next message's: a plain batch has neither
    kind, tags = '', ''
  end
  if member[user] == nil then
    member[user] = redis.call('SISMEMBER', members_key, user) == 1
  end
  local ok = true
  if not member[user] then
    out[#out + 1], out[#out + 2] = 'nomember', ''
    ok = false
  elseif checked then
    local ban_key, bucket_key = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
    if banned[user] == nil then
      banned[user] = redis.call('GET', ban_key) or false
    end
    if banned[user] then
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
  end
  if ok then
    local id
    if kind == '' and tags == '' then
      id = xadd_timed(stream_key, 'n', name, 't', text)
    else
      id = xadd_timed(stream_key, 'n', name, 't', text, 'k', kind, 'g', tags)
    end
    records[#records + 1] = message_record(id, conv, name, chat_name, text, kind, tags)
    out[#out + 1], out[#out + 2] = 'ok', id
  end
end

if #records > 0 then
  redis.call('XTRIM', stream_key, 'MINID', string.format('%d', now - ttl))
  redis.call('XTRIM', stream_key, 'MAXLEN', max_stored)
  redis.call('PEXPIRE', stream_key, ttl)
  redis.call(publish, channel, payload(records))
end
for _, bucket in pairs(buckets) do
  bucket_save(bucket)
end
return out

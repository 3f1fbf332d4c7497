-- post_private: store a private message, trim its stream exactly to the message lifetime
-- and to the newest `max stored` messages. On a standalone Redis, in the same atomic step:
-- check the recipient, the sender's ban and rate limit (so no gateway can race another
-- into letting a message through), record the peers, and publish to both users. On a
-- Redis Cluster those keys live in the users' own slots: the gateway checks with
-- post_gate.lua first, passes only the stream here, and records and publishes after.
-- The id comes from the server clock (xadd_fn.lua). (Chat messages go through post_many.lua.)
-- uses: time, bucket, xadd, payload
--
-- KEYS[1] stream; when checked here: KEYS[2] sender's ban  KEYS[3] sender's rate bucket
-- KEYS[4] recipient's account hash  KEYS[5] sender's peers  KEYS[6] recipient's peers
-- ARGV[1] sender key   ARGV[2] sender name   ARGV[3] recipient key   ARGV[4] text
-- ARGV[5] lifetime ms   ARGV[6] rate per second (0: off)   ARGV[7] burst
-- ARGV[8] conversation id   ARGV[9] sender's channel   ARGV[10] recipient's channel
-- ARGV[11] messages kept per conversation
-- ARGV[12] recipient's display name (when not checked here: the gateway read it)
-- ARGV[13] kind ('' a message, 'N' a notice)  ARGV[14] client tags ('' none)
-- Publishes (when checked here) to both channels an M record (payload_fn.lua):
--   id, conversation id, sender name, recipient's display name, text
-- Returns {'ok', id} | {'banned', until_ms} | {'rate', retry_ms} | {'nouser'}
local stream_key = KEYS[1]
local sender, sender_name, recipient, text = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, rate, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local conv, sender_channel, recipient_channel = ARGV[8], ARGV[9], ARGV[10]
local max_stored, recipient_name = ARGV[11], ARGV[12]
local kind, tags = ARGV[13], ARGV[14]
local checked = #KEYS > 1

local now = now_ms()
if checked then
  local ban_key, bucket_key, recipient_key = KEYS[2], KEYS[3], KEYS[4]
  recipient_name = redis.call('HGET', recipient_key, 'name')
  if not recipient_name then return {'nouser'} end
  local banned = redis.call('GET', ban_key)
  if banned then return {'banned', banned} end
  if rate > 0 then
    local bucket = bucket_load(bucket_key, now, rate, burst)
    local retry = bucket_take(bucket)
    if retry then return {'rate', retry} end
    bucket_save(bucket)
  end
end

local id
if kind == '' and tags == '' then
  id = xadd_timed(stream_key, 'n', sender_name, 'r', recipient_name, 't', text)
else
  id = xadd_timed(stream_key, 'n', sender_name, 'r', recipient_name, 't', text, 'k', kind, 'g', tags)
end
redis.call('XTRIM', stream_key, 'MINID', string.format('%d', now - ttl))
redis.call('XTRIM', stream_key, 'MAXLEN', max_stored)
redis.call('PEXPIRE', stream_key, ttl)
if checked then
  local sender_peers_key, recipient_peers_key = KEYS[5], KEYS[6]
  redis.call('SADD', sender_peers_key, recipient)
  redis.call('PEXPIRE', sender_peers_key, ttl)
  redis.call('SADD', recipient_peers_key, sender)
  redis.call('PEXPIRE', recipient_peers_key, ttl)
  local record = payload({message_record(id, conv, sender_name, recipient_name, text, kind, tags)})
  redis.call('PUBLISH', sender_channel, record)
  redis.call('PUBLISH', recipient_channel, record)
end
return {'ok', id}

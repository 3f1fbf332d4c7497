-- Store a message, trim its stream exactly to the message lifetime and publish it, in one
-- atomic step. Membership, ban and the per-user rate limit are checked in the same step,
-- so no gateway can race another into letting a message through.
--
-- KEYS[1] stream          KEYS[2] ban              KEYS[3] rate bucket (hash)
-- KEYS[4] chat: members set; private: the recipient's account hash
-- KEYS[5] the message clock (one id sequence for every conversation)
-- KEYS[6] sender's peers  KEYS[7] recipient's peers        (private only)
-- ARGV[1] 'c' (chat) or 'p' (private)   ARGV[2] sender key   ARGV[3] sender name
-- ARGV[4] chat: chat name; private: recipient key           ARGV[5] text
-- ARGV[6] lifetime ms   ARGV[7] rate per second (0: off)   ARGV[8] burst
-- ARGV[9] conversation id   ARGV[10] channel   ARGV[11] second channel (private only)
-- Returns {'ok', id} | {'banned', until_ms} | {'rate', retry_ms} | {'nomember'} | {'nouser'}
local private = ARGV[1] == 'p'
local where
if private then
  where = redis.call('HGET', KEYS[4], 'name')
  if not where then return {'nouser'} end
else
  if redis.call('SISMEMBER', KEYS[4], ARGV[2]) == 0 then return {'nomember'} end
  where = ARGV[4]
end

local banned = redis.call('GET', KEYS[2])
if banned then return {'banned', banned} end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[7])
if rate > 0 then
  local burst = tonumber(ARGV[8])
  local bucket = redis.call('HMGET', KEYS[3], 'tokens', 'ts')
  local tokens = tonumber(bucket[1]) or burst
  local ts = tonumber(bucket[2]) or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
  if tokens < 1 then
    return {'rate', string.format('%d', math.ceil((1 - tokens) * 1000 / rate))}
  end
  redis.call('HSET', KEYS[3], 'tokens', tostring(tokens - 1), 'ts', string.format('%d', now))
  redis.call('PEXPIRE', KEYS[3], math.ceil(burst * 1000 / rate) + 1000)
end

-- Ids come from one clock for all conversations, so ids from different streams still
-- order messages as they were accepted (a backlog merges several streams by id).
local ms, seq = now, 0
local last = redis.call('GET', KEYS[5])
if last then
  local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
  lms, lseq = tonumber(lms), tonumber(lseq)
  if lms >= now then ms, seq = lms, lseq + 1 end
end
local id = string.format('%d-%d', ms, seq)
redis.call('SET', KEYS[5], id)

local ttl = tonumber(ARGV[6])
if private then
  redis.call('XADD', KEYS[1], id, 'n', ARGV[3], 'r', where, 't', ARGV[5])
else
  redis.call('XADD', KEYS[1], id, 'n', ARGV[3], 't', ARGV[5])
end
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', now - ttl))
redis.call('PEXPIRE', KEYS[1], ttl)

local payload = table.concat({'M', id, ARGV[9], ARGV[3], where, ARGV[5]}, '\31')
redis.call('PUBLISH', ARGV[10], payload)
if private then
  redis.call('SADD', KEYS[6], ARGV[4])
  redis.call('PEXPIRE', KEYS[6], ttl)
  redis.call('SADD', KEYS[7], ARGV[2])
  redis.call('PEXPIRE', KEYS[7], ttl)
  redis.call('PUBLISH', ARGV[11], payload)
end
return {'ok', id}

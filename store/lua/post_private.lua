-- Store a private message, trim its stream exactly to the message lifetime and publish it
-- to both users, in one atomic step. The recipient, the sender's ban and the sender's rate
-- limit are checked in the same step, so no gateway can race another into letting a
-- message through. (Chat messages go through post_many.lua.)
--
-- KEYS[1] stream   KEYS[2] sender's ban   KEYS[3] sender's rate bucket (hash)
-- KEYS[4] recipient's account hash   KEYS[5] the message clock (one id sequence for all)
-- KEYS[6] sender's peers   KEYS[7] recipient's peers
-- ARGV[1] sender key   ARGV[2] sender name   ARGV[3] recipient key   ARGV[4] text
-- ARGV[5] lifetime ms   ARGV[6] rate per second (0: off)   ARGV[7] burst
-- ARGV[8] conversation id   ARGV[9] sender's channel   ARGV[10] recipient's channel
-- Returns {'ok', id} | {'banned', until_ms} | {'rate', retry_ms} | {'nouser'}
local where = redis.call('HGET', KEYS[4], 'name')
if not where then return {'nouser'} end

local banned = redis.call('GET', KEYS[2])
if banned then return {'banned', banned} end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[6])
if rate > 0 then
  local burst = tonumber(ARGV[7])
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

local ttl = tonumber(ARGV[5])
redis.call('XADD', KEYS[1], id, 'n', ARGV[2], 'r', where, 't', ARGV[4])
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', now - ttl))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SADD', KEYS[6], ARGV[3])
redis.call('PEXPIRE', KEYS[6], ttl)
redis.call('SADD', KEYS[7], ARGV[1])
redis.call('PEXPIRE', KEYS[7], ttl)

local payload = table.concat({'M', id, ARGV[8], ARGV[2], where, ARGV[4]}, '\31')
redis.call('PUBLISH', ARGV[9], payload)
redis.call('PUBLISH', ARGV[10], payload)
return {'ok', id}

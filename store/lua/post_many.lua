-- post.lua for many chat messages into one chat at once: the gateway's batch of one loop
-- turn, from any number of users. Each message is checked (membership, ban, rate) and
-- stored in order; the stream is trimmed and expired once, and all accepted messages are
-- published as one payload (records separated by \30), so every gateway parses and fans
-- them out as one burst.
--
-- KEYS[1] stream  KEYS[2] members  KEYS[3] message clock
-- then for message i (1-based): KEYS[2 + 2i] ban, KEYS[3 + 2i] rate bucket
-- ARGV[1] chat name  ARGV[2] lifetime ms  ARGV[3] rate per second (0: off)  ARGV[4] burst
-- ARGV[5] conversation id  ARGV[6] channel
-- then for message i: ARGV[4 + 3i] sender key, ARGV[5 + 3i] sender name, ARGV[6 + 3i] text
-- Returns status, value for each message: ok id | banned until_ms | rate retry_ms | nomember ''
local n = (#ARGV - 6) / 3
local chat, ttl, rate, burst = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local conv, channel = ARGV[5], ARGV[6]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms, seq = now, -1
local last = redis.call('GET', KEYS[3])
if last then
  local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
  lms, lseq = tonumber(lms), tonumber(lseq)
  if lms >= now then ms, seq = lms, lseq end
end

local member, banned, buckets = {}, {}, {}
local out, records = {}, {}
for i = 1, n do
  local user, name, text = ARGV[4 + 3 * i], ARGV[5 + 3 * i], ARGV[6 + 3 * i]
  if member[user] == nil then
    member[user] = redis.call('SISMEMBER', KEYS[2], user) == 1
  end
  if banned[user] == nil then
    banned[user] = redis.call('GET', KEYS[2 + 2 * i]) or false
  end
  local ok = true
  if not member[user] then
    out[#out + 1], out[#out + 2] = 'nomember', ''
    ok = false
  elseif banned[user] then
    out[#out + 1], out[#out + 2] = 'banned', banned[user]
    ok = false
  elseif rate > 0 then
    local b = buckets[user]
    if not b then
      local h = redis.call('HMGET', KEYS[3 + 2 * i], 'tokens', 'ts')
      b = {key = KEYS[3 + 2 * i], tokens = tonumber(h[1]) or burst, ts = tonumber(h[2]) or now}
      if now > b.ts then b.tokens = math.min(burst, b.tokens + (now - b.ts) * rate / 1000) end
      buckets[user] = b
    end
    if b.tokens < 1 then
      local retry = string.format('%d', math.ceil((1 - b.tokens) * 1000 / rate))
      out[#out + 1], out[#out + 2] = 'rate', retry
      ok = false
    else
      b.tokens = b.tokens - 1
      b.dirty = true
    end
  end
  if ok then
    seq = seq + 1
    local id = string.format('%d-%d', ms, seq)
    redis.call('XADD', KEYS[1], id, 'n', name, 't', text)
    records[#records + 1] = table.concat({'M', id, conv, name, chat, text}, '\31')
    out[#out + 1], out[#out + 2] = 'ok', id
  end
end

if #records > 0 then
  redis.call('SET', KEYS[3], string.format('%d-%d', ms, seq))
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', now - ttl))
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PUBLISH', channel, table.concat(records, '\30'))
end
for _, b in pairs(buckets) do
  if b.dirty then
    redis.call('HSET', b.key, 'tokens', tostring(b.tokens), 'ts', string.format('%d', now))
    redis.call('PEXPIRE', b.key, math.ceil(burst * 1000 / rate) + 1000)
  end
end
return out

-- bucket: a sender's token bucket, a hash {tokens, ts}: full at `burst` tokens, refilled at
-- `rate` tokens per second, one token per message. A missing hash is a full bucket.
--   local bucket = bucket_load(key, now, rate, burst)  -- rate > 0
--   local retry_ms = bucket_take(bucket)  -- nil: a token taken; else ms until one is back
--   bucket_save(bucket)                   -- writes it back, if a token was taken
-- A saved bucket expires when it would be full again, plus a second.
local function bucket_load(key, now, rate, burst)
  local h = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens, ts = tonumber(h[1]) or burst, tonumber(h[2]) or now
  if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate / 1000) end
  return {key = key, now = now, rate = rate, burst = burst, tokens = tokens, taken = false}
end

local function bucket_take(bucket)
  if bucket.tokens < 1 then
    return string.format('%d', math.ceil((1 - bucket.tokens) * 1000 / bucket.rate))
  end
  bucket.tokens = bucket.tokens - 1
  bucket.taken = true
  return nil
end

local function bucket_save(bucket)
  if not bucket.taken then return end
  redis.call('HSET', bucket.key,
    'tokens', tostring(bucket.tokens), 'ts', string.format('%d', bucket.now))
  redis.call('PEXPIRE', bucket.key, math.ceil(bucket.burst * 1000 / bucket.rate) + 1000)
end

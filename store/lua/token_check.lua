-- token_check: whether a resume token is valid; an expired one is removed on the way.
-- uses: time
--
-- KEYS[1] the user's tokens hash  KEYS[2] the user's account hash
-- ARGV[1] the token's hash
-- Returns the account's display name if the token is valid, else nil.
local tokens_key, account_key = KEYS[1], KEYS[2]
local token_hash = ARGV[1]

local expiry = redis.call('HGET', tokens_key, token_hash)
if not expiry then return false end
if tonumber(expiry) <= now_ms() then
  redis.call('HDEL', tokens_key, token_hash)
  return false
end
return redis.call('HGET', account_key, 'name')

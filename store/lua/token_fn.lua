-- token: the account name a resume token logs in as, or false; an expired token is
-- removed on the way.
-- uses: time
local function token_name(tokens_key, account_key, token_hash)
  local expiry = redis.call('HGET', tokens_key, token_hash)
  if not expiry then return false end
  if tonumber(expiry) <= now_ms() then
    redis.call('HDEL', tokens_key, token_hash)
    return false
  end
  return redis.call('HGET', account_key, 'name')
end

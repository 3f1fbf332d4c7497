-- gate: the nickname's login limits (see login_gate.lua), shared by the scripts that gate
-- a login attempt.
-- uses: time
local function login_gate(pair_key, nick_key, known_key, address, window_s, pair_limit,
                          nick_limit, known_ms, take)
  local now = now_ms()
  local window_ms = window_s * 1000

  local function wait(key)
    local left = redis.call('PTTL', key)
    if left < 0 then return window_ms end
    return left
  end

  local function count(key)
    return tonumber(redis.call('GET', key) or '0')
  end

  if pair_limit > 0 and count(pair_key) >= pair_limit then return {'pair', wait(pair_key)} end
  local seen_at = tonumber(redis.call('ZSCORE', known_key, address))
  local known = seen_at ~= nil and seen_at > now - known_ms
  if not known and nick_limit > 0 and count(nick_key) >= nick_limit then
    return {'nick', wait(nick_key)}
  end
  if take == '1' then
    local function incr(key)
      if redis.call('INCR', key) == 1 then redis.call('EXPIRE', key, window_s) end
    end
    incr(pair_key)
    if not known then incr(nick_key) end
  end
  return {'ok', known and 1 or 0}
end

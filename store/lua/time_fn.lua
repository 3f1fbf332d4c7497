-- time: the Redis server's clock in ms. Scripts stamp with it rather than with the
-- caller's time, so every gateway stamps by one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- payload: the pub/sub records gateways decode (store/payloads.py says the format and
-- reads it; tests/store/payload_vectors.json holds examples both sides must pass).
-- Records are joined by \30 into one payload, a record's fields by \31.
--   local record = message_record(id, conv, sender, where, text)
--   local record = banned_record(until_ms, by_moderator)
--   redis.call(publish, channel, payload(records))
local function message_record(id, conv, sender, where, text)
  return table.concat({'M', id, conv, sender, where, text}, '\31')
end

local function banned_record(until_ms, by_moderator)
  if by_moderator then return table.concat({'B', until_ms, 'm'}, '\31') end
  return table.concat({'B', until_ms}, '\31')
end

local function payload(records)
  return table.concat(records, '\30')
end

-- payload: the pub/sub records gateways decode (store/payloads.py says the format and
-- reads it; tests/store/payload_vectors.json holds examples both sides must pass).
-- Records are joined by \30 into one payload, a record's fields by \31.
--   local record = message_record(id, conv, sender, where, text, kind, tags)
--     (kind: 'M' a message, 'N' a notice, '' or nil taken as 'M'; tags: client tags or '')
--   local record = banned_record(until_ms, by_moderator)
--   local record = presence_record(change, user, name, stamp, reason)
--   redis.call(publish, channel, payload(records))
local function message_record(id, conv, sender, where, text, kind, tags)
  if kind == nil or kind == '' then kind = 'M' end
  if tags ~= nil and tags ~= '' then
    return table.concat({kind .. 't', id, conv, sender, where, tags, text}, '\31')
  end
  return table.concat({kind, id, conv, sender, where, text}, '\31')
end

local function banned_record(until_ms, by_moderator)
  if by_moderator then return table.concat({'B', until_ms, 'm'}, '\31') end
  return table.concat({'B', until_ms}, '\31')
end

local function presence_record(change, user, name, stamp, reason)
  return table.concat({'P', change, user, name, stamp, reason}, '\31')
end

local function payload(records)
  return table.concat(records, '\30')
end

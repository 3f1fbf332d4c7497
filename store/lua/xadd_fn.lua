-- xadd: append to a stream with an id that orders messages across conversations by the
-- server's clock to the microsecond: "<ms>-<µs within the ms x 1000>". Streams on different
-- shards of a cluster share no counter, so the id itself carries the time; ids within one
-- stream still only grow: when that id is not above the stream's last (the same
-- microsecond, or a clock stepped back), Redis picks the next one itself (XADD *), as it
-- does for every later message of the same call (one batch: the order is the stream's).
--   local id = xadd_timed(stream_key, 'n', name, 't', text)
local xadd_streams = {}
local function xadd_timed(key, ...)
  if xadd_streams[key] then return redis.call('XADD', key, '*', ...) end
  xadd_streams[key] = true
  local t = redis.call('TIME')
  local us = tonumber(t[2])
  local id = string.format('%s%03d-%d', t[1], math.floor(us / 1000), (us % 1000) * 1000)
  local added = redis.pcall('XADD', key, id, ...)
  if type(added) == 'table' and added.err then
    added = redis.call('XADD', key, '*', ...)
  end
  return added
end

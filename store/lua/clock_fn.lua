-- clock: message ids "ms-seq" from the one clock key all conversations share, so ids from
-- different streams still order messages as they were accepted (a backlog merges several
-- streams by id). Ids never go back: while the last id handed out is at or after now,
-- new ids continue its sequence; otherwise they start at now-0.
--   local clock = clock_open(clock_key, now)  -- reads the last id handed out
--   local id = clock_next(clock)              -- as often as needed, each id higher
--   clock_save(clock)                         -- once; writes the last id, if any was taken
local function clock_open(key, now)
  local ms, seq = now, -1
  local last = redis.call('GET', key)
  if last then
    local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
    lms, lseq = tonumber(lms), tonumber(lseq)
    if lms >= now then ms, seq = lms, lseq end
  end
  return {key = key, ms = ms, seq = seq, taken = false}
end

local function clock_next(clock)
  clock.seq = clock.seq + 1
  clock.taken = true
  return string.format('%d-%d', clock.ms, clock.seq)
end

local function clock_save(clock)
  if clock.taken then
    redis.call('SET', clock.key, string.format('%d-%d', clock.ms, clock.seq))
  end
end

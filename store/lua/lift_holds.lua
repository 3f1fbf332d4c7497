-- lift_holds: free addresses held back from registering (the `{g}` slot), either every
-- hold one user's ban made (the ban was lifted) or one address's (an operator's choice).
-- An address held for several banned users stays held, until the latest remaining end,
-- while any of them is left. Ended holds go first.
-- uses: time
--
-- KEYS[1] held addresses (address -> ms)  KEYS[2] reasons (address|user -> ms)
-- ARGV[1] 'user' or 'address'  ARGV[2] the user key or the address
-- Returns the addresses no longer held.
local held_key, reasons_key = KEYS[1], KEYS[2]
local by, value = ARGV[1], ARGV[2]

local now = string.format('%d', now_ms())
redis.call('ZREMRANGEBYSCORE', held_key, '-inf', now)
redis.call('ZREMRANGEBYSCORE', reasons_key, '-inf', now)
local freed = {}
if by == 'address' then
  local prefix = value .. '|'
  for _, member in ipairs(redis.call('ZRANGE', reasons_key, 0, -1)) do
    if string.sub(member, 1, #prefix) == prefix then redis.call('ZREM', reasons_key, member) end
  end
  if redis.call('ZREM', held_key, value) == 1 then freed[1] = value end
  return freed
end
local touched = {}
for _, member in ipairs(redis.call('ZRANGE', reasons_key, 0, -1)) do
  local address, user = string.match(member, '^(.*)|([^|]*)$')
  if user == value then
    redis.call('ZREM', reasons_key, member)
    touched[#touched + 1] = address
  end
end
for _, address in ipairs(touched) do
  local till = nil
  local prefix = address .. '|'
  local flat = redis.call('ZRANGE', reasons_key, 0, -1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, #prefix) == prefix then  -- flat: member, score, ...
      local ms = tonumber(flat[i + 1])
      if till == nil or ms > till then till = ms end
    end
  end
  if till == nil then
    if redis.call('ZREM', held_key, address) == 1 then freed[#freed + 1] = address end
  else
    redis.call('ZADD', held_key, string.format('%d', till), address)
  end
end
return freed

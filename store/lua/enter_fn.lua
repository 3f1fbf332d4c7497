-- enter: a login that succeeded. With forgive, its failed attempts from the address are
-- forgiven (the gate counted them before the check); the address becomes known to the
-- nickname and is kept among those a ban holds back, and the user's state is read, all in
-- the user's slot.
-- uses: time
local function enter(pair_key, known_key, held_key, chats_key, peers_key, cursors_key, ban_key,
                     address, known_keep, held_keep, memory_s, forgive)
  local now = now_ms()
  if forgive then redis.call('DEL', pair_key) end
  redis.call('ZADD', known_key, now, address)
  redis.call('ZREMRANGEBYRANK', known_key, 0, -known_keep - 1)
  redis.call('EXPIRE', known_key, memory_s)
  if held_keep > 0 then
    redis.call('ZADD', held_key, now, address)
    redis.call('ZREMRANGEBYRANK', held_key, 0, -held_keep - 1)
    redis.call('EXPIRE', held_key, memory_s)
  end
  return {
    redis.call('SMEMBERS', chats_key),
    redis.call('SMEMBERS', peers_key),
    redis.call('HGETALL', cursors_key),
    redis.call('GET', ban_key),
  }
end

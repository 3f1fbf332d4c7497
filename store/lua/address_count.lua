-- address_count: count this gateway's connections from one address, and return how many
-- that address has on every live gateway, so --max-per-ip holds across gateways. A
-- crashed gateway's count stops counting once it is not in the live list the caller
-- passes (gateways read that list at every heartbeat).
-- uses: (none)
--
-- KEYS[1] the address's hash (gateway id -> its connections from the address)
-- ARGV[1] this gateway's id  ARGV[2] change: 1 (connected) or -1 (closed)
-- ARGV[3] time to live of the hash in ms  ARGV[4..] ids of the live gateways
-- Returns the connections from the address on the live gateways (this one included),
-- after the change.
local address_key = KEYS[1]
local gateway, change, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local mine = redis.call('HINCRBY', address_key, gateway, change)
if mine <= 0 then
  redis.call('HDEL', address_key, gateway)
  mine = 0
end
redis.call('PEXPIRE', address_key, ttl)
local total = mine
for i = 4, #ARGV do
  local other = ARGV[i]
  if other ~= gateway then
    total = total + (tonumber(redis.call('HGET', address_key, other)) or 0)
  end
end
return total

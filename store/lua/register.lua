-- Create an account unless the nickname is taken; every user is in #general.
-- KEYS[1] account hash  KEYS[2] user's chats  KEYS[3] #general members  KEYS[4] #general hash
-- KEYS[5] active chats set
-- ARGV[1] user key  ARGV[2] name as typed  ARGV[3] password hash  ARGV[4] general key
-- Returns 1 when created, 0 when the nickname was taken meanwhile.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'pw', ARGV[3], 'created', t[1])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSETNX', KEYS[4], 'name', ARGV[4])
redis.call('SADD', KEYS[5], ARGV[4])
return 1

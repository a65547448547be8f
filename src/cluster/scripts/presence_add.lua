-- Adds a socket to presence, its instance's socket set and the connection index.
-- KEYS: presence set of the user, socket set of the instance, connection index of the namespace
-- ARGV: presence member ('' for an anonymous socket), instance set member, socket id, info JSON
-- Returns 1 when the user just came online (this socket is their only one anywhere).
local added = 0
if ARGV[1] ~= '' then
  added = redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
if added == 1 and redis.call('SCARD', KEYS[1]) == 1 then return 1 end
return 0

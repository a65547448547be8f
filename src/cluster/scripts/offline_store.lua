-- Keeps a message for a user only if they have no socket anywhere (checked in the same
-- atomic step, so a connect racing the push either sees it stored or gets it live), and
-- only if it fits the user's share: a full share refuses the message (returns 2) rather
-- than dropping one already accepted.
-- KEYS: presence set of the user, offline list, expiry index, byte counter of the list
-- ARGV: message, ttl ms, max messages, expiry ms, message bytes, max bytes, check presence (1/0)
-- Returns 1 stored, 0 the user is online, 2 full.
if ARGV[7] == '1' and redis.call('SCARD', KEYS[1]) > 0 then return 0 end
local bytes = tonumber(redis.call('GET', KEYS[4]) or '0')
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[3]) or bytes + tonumber(ARGV[5]) > tonumber(ARGV[6]) then
  return 2
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[4], ARGV[5])
-- The list's own TTL (a minute past its newest message) only guards against a sweep that
-- never runs; the expiry index is what the sweep reads.
local ttl = tonumber(ARGV[2]) + 60000
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
redis.call('ZADD', KEYS[3], 'GT', ARGV[4], KEYS[2])
return 1

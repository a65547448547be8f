-- Keeps a message for a user only if they have no socket anywhere (checked in the same
-- atomic step, so a connect racing the push either sees it stored or gets it live), and
-- only if it fits the user's share: a full share refuses the message (returns 2) rather
-- than dropping one already accepted. Every key is on the user's slot; the expiry index
-- is written by the caller, before this.
-- KEYS: presence set of the user, offline list, byte counter of the list
-- ARGV: message, ttl ms, max messages, message bytes, max bytes, check presence (1/0)
-- Returns 1 stored, 0 the user is online, 2 full.
if ARGV[6] == '1' and redis.call('SCARD', KEYS[1]) > 0 then return 0 end
local bytes = tonumber(redis.call('GET', KEYS[3]) or '0')
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[3]) or bytes + tonumber(ARGV[4]) > tonumber(ARGV[5]) then
  return 2
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[4])
-- The list's own TTL stays a minute past its newest message: the sweep reads it to tell
-- whether every message has expired, and it drops the list if no sweep ever runs.
local ttl = tonumber(ARGV[2]) + 60000
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return 1

-- Adds a socket to its user's presence set.
-- KEYS: presence set of the user
-- ARGV: presence member (instance, namespace, socket)
-- Returns 1 when the user just came online (this socket is their only one anywhere): the
-- add and the count are one atomic step, so of two racing first sockets one reports it.
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then return 1 end
return 0

-- Removes a socket from its user's presence set. Returns {removed, went_offline}: the
-- caller that removed the member is the one that reports the socket (and the user going
-- offline), so racing removers (the socket's instance, a reaper) report once.
-- KEYS: presence set of the user
-- ARGV: presence member (instance, namespace, socket)
local removed = redis.call('SREM', KEYS[1], ARGV[1])
local offline = 0
if removed == 1 and redis.call('SCARD', KEYS[1]) == 0 then offline = 1 end
return {removed, offline}

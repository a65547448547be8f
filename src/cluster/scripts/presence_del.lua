-- Removes a socket. Returns {removed, went_offline}: the caller that removed it is the one
-- that reports it, so racing removers (the socket's instance, a reaper) report once.
-- KEYS and ARGV as in presence_add.lua (ARGV[4] unused).
local removed = redis.call('SREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[3])
local offline = 0
if ARGV[1] ~= '' then
  local was = redis.call('SREM', KEYS[1], ARGV[1])
  if was == 1 and redis.call('SCARD', KEYS[1]) == 0 then offline = 1 end
  removed = math.max(removed, was)
end
return {removed, offline}

-- Drops the lists whose every message has expired; returns how many messages went.
-- KEYS: expiry index
-- ARGV: now ms, most lists per call, suffix of the byte counter keys
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local dropped = 0
for _, k in ipairs(keys) do
  dropped = dropped + redis.call('LLEN', k)
  redis.call('DEL', k, k .. ARGV[3])
  redis.call('ZREM', KEYS[1], k)
end
return dropped

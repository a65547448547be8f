-- Removes a list from the expiry index, unless a newer message moved its expiry since the
-- sweep read it.
-- KEYS: expiry index
-- ARGV: list key, score the sweep read
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0

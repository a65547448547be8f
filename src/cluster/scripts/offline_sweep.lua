-- Drops an offline list whose every message has expired (its TTL, kept a minute past its
-- newest message, has less than a minute left); counts what it dropped. Only the caller
-- that deletes the list counts it, so concurrent sweeps never count a message twice.
-- KEYS: offline list, byte counter of the list
-- Returns {0, messages dropped} when the list is gone now (dropped here or earlier), or
-- {1, ms until its newest message expires} when it still holds a live one.
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then return {0, 0} end
if pttl > 60000 then return {1, pttl - 60000} end
local dropped = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1], KEYS[2])
return {0, dropped}

-- Takes every message kept for a user in a namespace, oldest first.
-- KEYS: offline list, expiry index, byte counter of the list
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], KEYS[1])
return items

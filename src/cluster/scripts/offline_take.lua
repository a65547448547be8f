-- Takes every message kept for a user in a namespace, oldest first. The list's entry in
-- the expiry index is left for the sweep, which finds the list gone and counts nothing.
-- KEYS: offline list, byte counter of the list
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2])
return items

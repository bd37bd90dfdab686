-- purge_dead: remove up to N dead tasks and their records, oldest first (the caller calls
-- again until fewer come back, so no single call blocks the server for long).
-- KEYS[1] dead
-- ARGV[1] task prefix  ARGV[2] max count
-- Returns the number removed.
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
end
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return #ids

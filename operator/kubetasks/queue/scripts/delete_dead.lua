-- delete_dead: remove one dead task and its record.
-- KEYS[1] dead
-- ARGV[1] task prefix  ARGV[2] task id
-- Returns 1, or 0 when the task is not in the dead set (nothing changed).
if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
redis.call('DEL', ARGV[1] .. ARGV[2])
return 1

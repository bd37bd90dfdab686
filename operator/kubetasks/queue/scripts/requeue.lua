-- requeue: hand a leased task back untouched (worker shutting down): the attempt it was
-- given is not spent, and it goes back in its old place in the queue. No history entry is
-- written: the attempt did not happen, and its number is the next one's.
-- KEYS[1] active   KEYS[2] pending   KEYS[3] notify
-- ARGV[1] task prefix  ARGV[2] worker id  ARGV[3] task id  ARGV[4] attempt  ARGV[5] notify cap
-- Returns 1, or 0 when the worker no longer holds that attempt (nothing changed).
local id = ARGV[3]
local tkey = ARGV[1] .. id
local f = redis.call('HMGET', tkey, 'state', 'worker', 'attempts', 'score')
if f[1] ~= 'active' or f[2] ~= ARGV[2] or f[3] ~= ARGV[4] then return 0 end
redis.call('ZREM', KEYS[1], id)
redis.call('HINCRBY', tkey, 'attempts', -1)
redis.call('HSET', tkey, 'state', 'pending', 'worker', '')
set_running(tkey, false)
redis.call('ZADD', KEYS[2], f[4], id)
wake(KEYS[3], 1, tonumber(ARGV[5]))
return 1

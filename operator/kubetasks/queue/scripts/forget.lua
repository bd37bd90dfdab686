-- forget: the task's resource was deleted: drop every trace of it. A running task is
-- flagged for cancellation instead (its worker stops it on the next heartbeat, and its
-- record then expires with the usual retention).
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] active   KEYS[4] dead
-- ARGV[1] task prefix  ARGV[2] unique prefix  ARGV[3] retention (s)  ARGV[4] task id
-- Returns 'forgotten', 'cancelling' or 'missing'.
local id = ARGV[4]
local tkey = ARGV[1] .. id
local state = redis.call('HGET', tkey, 'state')
if not state then return 'missing' end
if state == 'active' then
  redis.call('HSET', tkey, 'cancel', '1')
  return 'cancelling'
end
release_unique(ARGV[2], tkey, id)
redis.call('ZREM', KEYS[1], id)
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[4], id)
redis.call('DEL', tkey)
return 'forgotten'

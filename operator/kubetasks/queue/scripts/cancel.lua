-- cancel: a waiting task is removed at once; a running one is flagged, and its worker
-- learns of it on its next heartbeat and tells the handler.
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] active   KEYS[4] config
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] unique prefix  ARGV[4] default retention (s)
-- ARGV[5] task id
-- Returns 'cancelled', 'cancelling' (running; flagged), 'missing', or the terminal state
-- the task already had (nothing changed).
local id = ARGV[5]
local tkey = ARGV[2] .. id
local state = redis.call('HGET', tkey, 'state')
if not state then return 'missing' end
if state == 'pending' or state == 'scheduled' or state == 'retrying' then
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  finish(tkey, ARGV[3], id, 'cancelled', tonumber(ARGV[1]), retention_of(KEYS[4], ARGV[4]), 'error',
    error_json('Cancelled', 'cancelled before it ran'))
  return 'cancelled'
end
if state == 'active' then
  redis.call('HSET', tkey, 'cancel', '1')
  return 'cancelling'
end
return state

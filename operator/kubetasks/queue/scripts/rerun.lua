-- rerun: run a dead task again as a new task (a new id, its own attempt chain); the old
-- record stays readable (until its retention ends) and leaves the dead set. The two are
-- linked both ways: 'rerun_as' on the old record, 'rerun_of' on the new one.
-- KEYS[1] dead   KEYS[2] pending   KEYS[3] seq   KEYS[4] notify
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] old id  ARGV[4] new id
-- ARGV[5] new message  ARGV[6] priority  ARGV[7] max retries  ARGV[8] notify cap
-- ARGV[9] enqueue channel  ARGV[10] queue name (published there, as enqueue does)
-- Returns 'queued', 'missing' (the old id is not in the dead set) or 'exists' (the new id
-- is taken; nothing changed).
local old, new = ARGV[3], ARGV[4]
if not redis.call('ZSCORE', KEYS[1], old) then return 'missing' end
if redis.call('EXISTS', ARGV[2] .. new) == 1 then return 'exists' end
local score = -tonumber(ARGV[6]) * 1099511627776 + redis.call('INCR', KEYS[3])
redis.call('HSET', ARGV[2] .. new, 'msg', ARGV[5], 'state', 'pending', 'score', score,
  'attempts', 0, 'max_retries', ARGV[7], 'deadline', 0, 'unique', '', 'enqueued_at', ARGV[1],
  'rerun_of', old)
redis.call('ZADD', KEYS[2], score, new)
redis.call('ZREM', KEYS[1], old)
redis.call('HSET', ARGV[2] .. old, 'rerun_as', new)
wake(KEYS[4], 1, tonumber(ARGV[8]))
redis.call('PUBLISH', ARGV[9], ARGV[10])
return 'queued'

-- retry: a failed attempt that will be tried again at a given time.
-- KEYS[1] active   KEYS[2] scheduled   KEYS[3] stats   KEYS[4] notify
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] worker id  ARGV[4] task id  ARGV[5] attempt
-- ARGV[6] retry at (ms)  ARGV[7] error (JSON)  ARGV[8] notify cap
-- ARGV[9] error type (the attempt is recorded as 'retried' in the history, see lib.lua)
-- Returns 1, or 0 when the worker no longer holds that attempt (nothing changed).
local tkey = ARGV[2] .. ARGV[4]
local t = read_task(tkey)
if t.state ~= 'active' or t.worker ~= ARGV[3] or t.attempts ~= ARGV[5] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[4])
local afield, avalue, n = attempt_entry(t, tonumber(ARGV[1]), 'retried', ARGV[9])
redis.call('HSET', tkey, 'state', 'retrying', 'error', ARGV[7], 'next_retry_at', ARGV[6],
  afield, avalue)
trim_history(tkey, n)
set_running(tkey, false, t)
redis.call('HINCRBY', KEYS[3], 'failed', 1)
-- like a delayed enqueue, wake a worker so that an idle one learns the new due time
wake(KEYS[4], 1, tonumber(ARGV[8]))
return 1

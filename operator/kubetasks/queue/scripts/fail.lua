-- fail: end an attempt for good: 'failed' or 'deadline_exceeded' (kept in the dead set),
-- or 'cancelled' (a running task that honoured its cancellation).
-- KEYS[1] active   KEYS[2] dead   KEYS[3] stats   KEYS[4] config
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] unique prefix  ARGV[4] default retention (s)
-- ARGV[5] worker id  ARGV[6] task id  ARGV[7] attempt  ARGV[8] final state  ARGV[9] error (JSON)
-- ARGV[10] error type (for the attempt history, 'a:<attempt>', see lib.lua)
-- Returns 1, or 0 when the worker no longer holds that attempt (nothing changed).
local id = ARGV[6]
local tkey = ARGV[2] .. id
local t = read_task(tkey)
if t.state ~= 'active' or t.worker ~= ARGV[5] or t.attempts ~= ARGV[7] then return 0 end
redis.call('ZREM', KEYS[1], id)
finish(tkey, ARGV[3], id, ARGV[8], tonumber(ARGV[1]), retention_of(KEYS[4], ARGV[4]), 'error',
  ARGV[9], t, ARGV[8], ARGV[10])
if ARGV[8] ~= 'cancelled' then
  redis.call('ZADD', KEYS[2], ARGV[1], id)
  redis.call('HINCRBY', KEYS[3], 'failed', 1)
end
return 1

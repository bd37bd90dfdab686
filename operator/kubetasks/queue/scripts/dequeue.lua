-- dequeue: lease up to N pending tasks, highest priority first, FIFO within a priority.
-- KEYS[1] pending   KEYS[2] active   KEYS[3] dead   KEYS[4] stats
-- ARGV[1] now (ms)  ARGV[2] lease expiry (ms)  ARGV[3] max count  ARGV[4] worker id
-- ARGV[5] task prefix  ARGV[6] unique prefix  ARGV[7] retention (s)
-- Tasks whose deadline has passed are not started: they end 'deadline_exceeded'; tasks
-- flagged for cancellation end 'cancelled'.
-- Returns a flat array, 4 per task: id, message, attempt, state: 'active' for the tasks to
-- run, or the final state of a task that ended here without running (so the worker can
-- report it).
local now = tonumber(ARGV[1])
local out = {}
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[3])
for i = 1, #popped, 2 do
  local id = popped[i]
  local tkey = ARGV[5] .. id
  local f = redis.call('HMGET', tkey, 'msg', 'deadline', 'cancel')
  if f[1] then
    local deadline = tonumber(f[2]) or 0
    if f[3] == '1' then
      -- cancelled while running, then handed back (shutdown or lost worker): never rerun
      finish(tkey, ARGV[6], id, 'cancelled', now, ARGV[7], 'error',
        error_json('Cancelled', 'cancelled before it could run again'))
      out[#out + 1] = id
      out[#out + 1] = f[1]
      out[#out + 1] = redis.call('HGET', tkey, 'attempts')
      out[#out + 1] = 'cancelled'
    elseif deadline > 0 and now > deadline then
      finish(tkey, ARGV[6], id, 'deadline_exceeded', now, ARGV[7], 'error',
        error_json('DeadlineExceeded', 'the deadline passed before an attempt could start'))
      redis.call('ZADD', KEYS[3], now, id)
      redis.call('HINCRBY', KEYS[4], 'failed', 1)
      out[#out + 1] = id
      out[#out + 1] = f[1]
      out[#out + 1] = redis.call('HGET', tkey, 'attempts')
      out[#out + 1] = 'deadline_exceeded'
    else
      local attempt = redis.call('HINCRBY', tkey, 'attempts', 1)
      redis.call('HSET', tkey, 'state', 'active', 'worker', ARGV[4], 'started_at', now)
      redis.call('ZADD', KEYS[2], ARGV[2], id)
      out[#out + 1] = id
      out[#out + 1] = f[1]
      out[#out + 1] = attempt
      out[#out + 1] = 'active'
    end
  end
end
return out

-- expire: end the tasks whose deadline passed while they waited (pending, scheduled or
-- waiting for a retry) 'deadline_exceeded', whether or not any worker serves the queue.
-- A task that started is its worker's; one that ended is left as it is.
-- KEYS[1] deadlines   KEYS[2] pending   KEYS[3] scheduled   KEYS[4] dead   KEYS[5] stats
-- KEYS[6] config
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] unique prefix  ARGV[4] default retention (s)
-- ARGV[5] max count
-- Returns a flat array, 3 per task ended here: id, message, attempts.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
local retention = retention_of(KEYS[6], ARGV[4])
local out = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local tkey = ARGV[2] .. id
  local f = redis.call('HMGET', tkey, 'state', 'msg', 'attempts')
  if f[1] == 'pending' or f[1] == 'scheduled' or f[1] == 'retrying' then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    finish(tkey, ARGV[3], id, 'deadline_exceeded', now, retention, 'error',
      error_json('DeadlineExceeded', 'the deadline passed before an attempt could start'))
    redis.call('ZADD', KEYS[4], now, id)
    redis.call('HINCRBY', KEYS[5], 'failed', 1)
    out[#out + 1] = id
    out[#out + 1] = f[2]
    out[#out + 1] = f[3]
  end
end
return out

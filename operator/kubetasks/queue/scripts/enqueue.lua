-- enqueue: add tasks to one queue; idempotent by task id, deduplicated by unique key.
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] seq   KEYS[4] notify   KEYS[5] deadlines
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] unique prefix  ARGV[4] notify cap
-- ARGV[5] enqueue channel  ARGV[6] queue name (published there, so an autoscaler watching
--         the channel wakes a pool at zero at once)
-- ARGV[7..] 9 per task: id, message, priority, run at (ms; 0 or past = now), max retries,
--           deadline (ms; 0 = none), unique key ('' = none), unique TTL (s), attempts already
--           spent (non-zero when the operator restores a task Redis lost)
-- Returns one entry per task: 'queued', 'scheduled', 'exists' (the id is already known:
-- nothing changed) or 'duplicate:<id of the task holding the unique key>'.
local now = tonumber(ARGV[1])
local out = {}
local woke = 0
for i = 7, #ARGV, 9 do
  local id = ARGV[i]
  local tkey = ARGV[2] .. id
  local ukey = ARGV[i + 6]
  local holder = false
  if redis.call('EXISTS', tkey) == 1 then
    out[#out + 1] = 'exists'
  else
    if ukey ~= '' and not redis.call('SET', ARGV[3] .. ukey, id, 'NX', 'EX', ARGV[i + 7]) then
      holder = redis.call('GET', ARGV[3] .. ukey)
    end
    if holder then
      out[#out + 1] = 'duplicate:' .. tostring(holder)
    else
      local score = -tonumber(ARGV[i + 2]) * 1099511627776 + redis.call('INCR', KEYS[3])
      local run_at = tonumber(ARGV[i + 3])
      local state = 'pending'
      if run_at > now then state = 'scheduled' end
      redis.call('HSET', tkey, 'msg', ARGV[i + 1], 'state', state, 'score', score,
        'attempts', ARGV[i + 8], 'max_retries', ARGV[i + 4], 'deadline', ARGV[i + 5], 'unique', ukey,
        'enqueued_at', now)
      if state == 'scheduled' then
        redis.call('ZADD', KEYS[2], run_at, id)
      else
        redis.call('ZADD', KEYS[1], score, id)
      end
      -- expire.lua ends it there if it still waits then (entries of tasks that started or
      -- ended go when their deadline passes)
      local deadline = tonumber(ARGV[i + 5])
      if deadline > 0 then redis.call('ZADD', KEYS[5], deadline, id) end
      -- a scheduled task wakes a worker too, so that it learns the new due time
      woke = woke + 1
      out[#out + 1] = (state == 'scheduled') and 'scheduled' or 'queued'
    end
  end
end
wake(KEYS[4], woke, tonumber(ARGV[4]))
if woke > 0 then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return out

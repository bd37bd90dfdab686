-- reclaim: take back tasks whose worker is gone: leases that expired, or every task held
-- by one named worker (its pod was deleted). Each goes back to pending, or to the dead set
-- when it has used all its attempts (a task that kills its worker every time must stop).
-- The lost attempt is recorded in the history as 'lost', error type WorkerLost (lib.lua).
-- KEYS[1] active   KEYS[2] pending   KEYS[3] dead   KEYS[4] stats   KEYS[5] notify
-- KEYS[6] config
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] unique prefix  ARGV[4] default retention (s)
-- ARGV[5] max count  ARGV[6] worker id ('' = every expired lease)  ARGV[7] notify cap
-- Returns {number returned to pending, {id, message, attempts, ... of the tasks moved to dead}}.
local now = tonumber(ARGV[1])
local retention = retention_of(KEYS[6], ARGV[4])
local ids
if ARGV[6] == '' then
  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[5])
else
  ids = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local requeued, dead = 0, {}
for _, id in ipairs(ids) do
  local tkey = ARGV[2] .. id
  local f = redis.call('HMGET', tkey, 'worker', 'attempts', 'max_retries', 'score', 'msg')
  if ARGV[6] == '' or f[1] == ARGV[6] then
    redis.call('ZREM', KEYS[1], id)
    if f[4] then
      record_attempt(tkey, now, 'lost', 'WorkerLost')
      local why = 'worker ' .. tostring(f[1]) .. ' stopped holding the task (lease expired or pod gone)'
      if tonumber(f[2]) > tonumber(f[3]) then
        finish(tkey, ARGV[3], id, 'failed', now, retention, 'error', error_json('WorkerLost', why))
        redis.call('ZADD', KEYS[3], now, id)
        redis.call('HINCRBY', KEYS[4], 'failed', 1)
        dead[#dead + 1] = id
        dead[#dead + 1] = f[5]
        dead[#dead + 1] = f[2]
      else
        redis.call('HSET', tkey, 'state', 'pending', 'worker', '', 'error', error_json('WorkerLost', why))
        set_running(tkey, false)
        redis.call('ZADD', KEYS[2], f[4], id)
        requeued = requeued + 1
      end
    end
  end
end
wake(KEYS[5], requeued, tonumber(ARGV[7]))
if retention > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - retention * 1000)
end
return {requeued, dead}

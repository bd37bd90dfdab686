-- ack: record successful attempts and release their leases.
-- KEYS[1] active   KEYS[2] stats   KEYS[3] config
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] unique prefix  ARGV[4] default retention (s)
-- ARGV[5] worker id  ARGV[6..] 3 per task: id, attempt, result (JSON)
-- An ack counts only while the worker still holds that attempt's lease (a reclaimed task
-- acked late by its old worker is ignored). Returns the ids that were not acked.
local now = tonumber(ARGV[1])
local retention = retention_of(KEYS[3], ARGV[4])
local stale = {}
local done = 0
for i = 6, #ARGV, 3 do
  local id = ARGV[i]
  local tkey = ARGV[2] .. id
  local f = redis.call('HMGET', tkey, 'state', 'worker', 'attempts')
  if f[1] == 'active' and f[2] == ARGV[5] and f[3] == ARGV[i + 1] then
    redis.call('ZREM', KEYS[1], id)
    finish(tkey, ARGV[3], id, 'succeeded', now, retention, 'result', ARGV[i + 2])
    done = done + 1
  else
    stale[#stale + 1] = id
  end
end
if done > 0 then redis.call('HINCRBY', KEYS[2], 'processed', done) end
return stale

-- ack: record successful attempts and release their leases.
-- KEYS[1] active   KEYS[2] stats   KEYS[3] config
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] unique prefix  ARGV[4] default retention (s)
-- ARGV[5] worker id  ARGV[6..] 3 per task: id, attempt, result (JSON)
-- An ack counts only while the worker still holds that attempt's lease (a reclaimed task
-- acked late by its old worker is ignored). Each acked attempt is recorded in the task's
-- history ('a:<attempt>', see lib.lua). Per task: one read of its hash (read_task), one
-- write, its EXPIRE; the leases are released in one ZREM. Returns the ids not acked.
local now = tonumber(ARGV[1])
local retention = retention_of(KEYS[3], ARGV[4])
local stale = {}
local acked = {}
for i = 6, #ARGV, 3 do
  local id = ARGV[i]
  local tkey = ARGV[2] .. id
  local t = read_task(tkey)
  if t.state == 'active' and t.worker == ARGV[5] and t.attempts == ARGV[i + 1] then
    acked[#acked + 1] = id
    finish(tkey, ARGV[3], id, 'succeeded', now, retention, 'result', ARGV[i + 2], t,
      'succeeded', '')
  else
    stale[#stale + 1] = id
  end
end
if #acked > 0 then
  each_chunk('ZREM', KEYS[1], acked, 1)
  redis.call('HINCRBY', KEYS[2], 'processed', #acked)
end
return stale

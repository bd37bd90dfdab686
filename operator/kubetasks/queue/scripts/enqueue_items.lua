-- enqueue_items: add a batch of one TaskSet's items to its queue, and move the set's cursor.
-- KEYS[1] pending   KEYS[2] seq   KEYS[3] notify   KEYS[4] deadlines   KEYS[5] set hash
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] notify cap  ARGV[4] enqueue channel
-- ARGV[5] queue name  ARGV[6] priority  ARGV[7] max retries  ARGV[8] deadline (ms; 0 = none)
-- ARGV[9] total items  ARGV[10] set name  ARGV[11] next (the cursor after this batch)
-- ARGV[12..] 3 per item: id, index, message
-- Item ids are derived from the set's uid and the index, so a batch sent twice (two
-- operators, a retry after a lost reply) adds nothing the second time: an id already known
-- is left as it is. The cursor only moves forward. Returns the number of items added, or -1
-- (and adds nothing) when the set hash is gone: Redis lost the set (a FLUSHALL, a server
-- restarted empty) after the operator read it, and this batch must not start a set whose
-- recorded ends are missing; restore_set puts it back first (and starts a new set).
if redis.call('EXISTS', KEYS[5]) == 0 then return -1 end
local now = tonumber(ARGV[1])
local added = 0
for i = 12, #ARGV, 3 do
  local id = ARGV[i]
  local tkey = ARGV[2] .. id
  if redis.call('EXISTS', tkey) == 0 then
    local score = -tonumber(ARGV[6]) * 1099511627776 + redis.call('INCR', KEYS[2])
    redis.call('HSET', tkey, 'msg', ARGV[i + 2], 'state', 'pending', 'score', score,
      'attempts', 0, 'max_retries', ARGV[7], 'deadline', ARGV[8], 'unique', '',
      'enqueued_at', now, 'set', KEYS[5], 'idx', ARGV[i + 1])
    redis.call('ZADD', KEYS[1], score, id)
    if tonumber(ARGV[8]) > 0 then redis.call('ZADD', KEYS[4], ARGV[8], id) end
    added = added + 1
  end
end
redis.call('HSET', KEYS[5], 'total', ARGV[9], 'name', ARGV[10])
local next = tonumber(redis.call('HGET', KEYS[5], 'next')) or 0
if tonumber(ARGV[11]) > next then redis.call('HSET', KEYS[5], 'next', ARGV[11]) end
wake(KEYS[3], added, tonumber(ARGV[3]))
if added > 0 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return added

-- promote: move delayed tasks and retries whose time has come to the pending set.
-- KEYS[1] scheduled   KEYS[2] pending   KEYS[3] notify
-- ARGV[1] now (ms)  ARGV[2] task prefix  ARGV[3] max count  ARGV[4] notify cap
-- Returns {number moved, due time (ms) of the earliest task still scheduled, or -1}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do
  local tkey = ARGV[2] .. id
  redis.call('ZREM', KEYS[1], id)
  local score = redis.call('HGET', tkey, 'score')
  if score then
    redis.call('HSET', tkey, 'state', 'pending')
    redis.call('ZADD', KEYS[2], score, id)
  end
end
wake(KEYS[3], #due, tonumber(ARGV[4]))
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local next_due = -1
if head[2] then next_due = tonumber(head[2]) end
return {#due, next_due}

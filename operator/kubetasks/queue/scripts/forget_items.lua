-- forget_items: a TaskSet was deleted: drop its items and its bookkeeping. A running item is
-- flagged for cancellation instead (its worker stops it on the next heartbeat, and its
-- record then expires with the usual retention).
-- KEYS[1] pending   KEYS[2] scheduled   KEYS[3] active   KEYS[4] dead   KEYS[5] deadlines
-- KEYS[6..] the set's own keys (deleted when ARGV[2] is '1')
-- ARGV[1] task prefix  ARGV[2] '1' to delete the set's keys too  ARGV[3..] item ids
-- Returns the number of items dropped.
local dropped = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local tkey = ARGV[1] .. id
  local state = redis.call('HGET', tkey, 'state')
  if state == 'active' then
    redis.call('HSET', tkey, 'cancel', '1')
  elseif state then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZREM', KEYS[5], id)
    redis.call('DEL', tkey)
    dropped = dropped + 1
  end
end
if ARGV[2] == '1' then
  for i = 6, #KEYS do redis.call('DEL', KEYS[i]) end
end
return dropped

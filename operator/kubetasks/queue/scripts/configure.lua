-- configure: replace a queue's settings (from its Queue resource; none = the defaults) and
-- wake idle workers, so that a resumed queue, or one whose cap or rate went up, starts its
-- waiting tasks at once instead of at the workers' next idle poll.
-- KEYS[1] config   KEYS[2] pending   KEYS[3] notify
-- ARGV[1] notify cap   ARGV[2..] field, value, ... (the new settings; none = defaults)
-- Returns the number of wake-up tokens pushed.
redis.call('DEL', KEYS[1])
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
end
if redis.call('HGET', KEYS[1], 'paused') == '1' then
  return 0
end
local waiting = redis.call('ZCARD', KEYS[2])
wake(KEYS[3], waiting, tonumber(ARGV[1]))
return math.min(waiting, tonumber(ARGV[1]))

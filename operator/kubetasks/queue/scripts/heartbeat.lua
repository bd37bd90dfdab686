-- heartbeat: extend the leases a worker holds and tell it which of its tasks to cancel.
-- KEYS[1] active
-- ARGV[1] lease expiry (ms)  ARGV[2] task prefix  ARGV[3] worker id  ARGV[4..] task ids
-- Returns {ids flagged for cancellation, ids this worker no longer holds}.
local cancel, lost = {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', ARGV[2] .. id, 'state', 'worker', 'cancel')
  if f[1] == 'active' and f[2] == ARGV[3] and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], id)
    if f[3] == '1' then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {cancel, lost}

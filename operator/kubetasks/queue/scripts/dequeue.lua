-- dequeue: lease up to N pending tasks, highest priority first, FIFO within a priority,
-- within the queue's settings: nothing while it is paused, no more running tasks than its
-- max_in_flight (counted across every worker: the active set is the queue's), and no more
-- starts than its token bucket (rate per second, burst) allows.
-- KEYS[1] pending   KEYS[2] active   KEYS[3] dead   KEYS[4] stats   KEYS[5] config
-- KEYS[6] bucket
-- ARGV[1] now (ms)  ARGV[2] lease expiry (ms)  ARGV[3] max count  ARGV[4] worker id
-- ARGV[5] task prefix  ARGV[6] unique prefix  ARGV[7] default retention (s)
-- Tasks whose deadline has passed are not started: they end 'deadline_exceeded'; tasks
-- flagged for cancellation end 'cancelled'. Neither takes a token or a slot.
-- Returns {hold, wait (ms), default timeout (s, 0 = none), max timeout (s, 0 = none), tasks}:
-- hold is '' when nothing held the queue back, else 'paused', 'capped' or 'throttled'
-- (then wait is when a start is possible again; 0 for paused: until resumed); tasks is a
-- flat array, 4 per task: id, message, attempt, state: 'active' for the tasks to run, or
-- the final state of a task that ended here without running (so the worker can report it).
local now = tonumber(ARGV[1])
local cfg = redis.call('HMGET', KEYS[5], 'paused', 'max_in_flight', 'rate', 'burst',
  'retention', 'default_timeout', 'max_timeout')
local default_timeout = tonumber(cfg[6]) or 0
local max_timeout = tonumber(cfg[7]) or 0
if cfg[1] == '1' then
  return {'paused', 0, default_timeout, max_timeout, {}}
end
local retention = tonumber(cfg[5]) or tonumber(ARGV[7])
local want = tonumber(ARGV[3])
local hold, wait = '', 0
local cap = tonumber(cfg[2])
if cap then
  local room = cap - redis.call('ZCARD', KEYS[2])
  if room < want then
    hold, wait = 'capped', 50
    want = math.max(room, 0)
  end
end
local rate = tonumber(cfg[3])
local tokens, bucket_at
if rate and want > 0 then
  local burst = tonumber(cfg[4]) or 1  -- always written with the rate (QueueSettings)
  local b = redis.call('HMGET', KEYS[6], 'tokens', 'at')
  -- The bucket's clock only moves forward: a worker whose clock is behind refills nothing
  -- and cannot move it back, so skew between workers never adds tokens.
  local last = tonumber(b[2]) or now
  bucket_at = math.max(last, now)
  tokens = math.min(burst, (tonumber(b[1]) or burst) + (bucket_at - last) * rate / 1000)
  if tokens < want then
    hold = 'throttled'
    want = math.floor(tokens)
    wait = math.max(math.ceil((want + 1 - tokens) * 1000 / rate), 1)
  end
end
local out = {}
local started = 0
local leases = {}
if want > 0 and redis.call('ZCARD', KEYS[1]) > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], want)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local tkey = ARGV[5] .. id
    -- one read per task: what starting it needs, and what ending it here would
    local f = redis.call('HMGET', tkey, 'msg', 'deadline', 'cancel', 'attempts', 'set', 'idx',
      'unique')
    if f[1] then
      local t = {attempts = f[4], set = f[5], idx = f[6], unique = f[7]}
      local deadline = tonumber(f[2]) or 0
      if f[3] == '1' then
        -- cancelled while running, then handed back (shutdown or lost worker): never rerun
        finish(tkey, ARGV[6], id, 'cancelled', now, retention, 'error',
          error_json('Cancelled', 'cancelled before it could run again'), t)
        out[#out + 1] = id
        out[#out + 1] = f[1]
        out[#out + 1] = f[4]
        out[#out + 1] = 'cancelled'
      elseif deadline > 0 and now > deadline then
        finish(tkey, ARGV[6], id, 'deadline_exceeded', now, retention, 'error',
          error_json('DeadlineExceeded', 'the deadline passed before an attempt could start'), t)
        redis.call('ZADD', KEYS[3], now, id)
        redis.call('HINCRBY', KEYS[4], 'failed', 1)
        out[#out + 1] = id
        out[#out + 1] = f[1]
        out[#out + 1] = f[4]
        out[#out + 1] = 'deadline_exceeded'
      else
        local attempt = (tonumber(f[4]) or 0) + 1
        redis.call('HSET', tkey, 'attempts', attempt, 'state', 'active', 'worker', ARGV[4],
          'started_at', now)
        set_running(tkey, true, t)
        leases[#leases + 1] = ARGV[2]
        leases[#leases + 1] = id
        started = started + 1
        out[#out + 1] = id
        out[#out + 1] = f[1]
        out[#out + 1] = attempt
        out[#out + 1] = 'active'
      end
    end
  end
end
if #leases > 0 then each_chunk('ZADD', KEYS[2], leases, 2) end
if tokens then
  -- Fractions are kept as text: a Lua number returned to Redis would be truncated.
  redis.call('HSET', KEYS[6], 'tokens', tostring(tokens - started), 'at', bucket_at)
  redis.call('PEXPIRE', KEYS[6], 3600000)
end
return {hold, wait, default_timeout, max_timeout, out}

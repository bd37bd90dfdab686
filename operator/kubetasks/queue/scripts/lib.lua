-- lib.lua: helpers prepended to every transition script (not a transition itself).
-- Task hashes live at <task prefix><id>; unique locks at <unique prefix><key>.

-- Attempts kept in a task's history (older entries are dropped as new ones come).
local HISTORY = 20
-- Most arguments one command of a script is given at once (Lua's unpack has a limit).
local CHUNK = 1000

-- The fields of a task hash that starting or ending an attempt reads, in one HMGET: the
-- helpers below take this table instead of each reading its own fields again.
local function read_task(tkey)
  local f = redis.call('HMGET', tkey, 'state', 'worker', 'attempts', 'started_at', 'set',
    'idx', 'unique')
  return {state = f[1], worker = f[2], attempts = f[3], started_at = f[4], set = f[5],
    idx = f[6], unique = f[7]}
end

-- Release the unique lock of a task, but only while this task still holds it. `t`: the
-- task's fields (read_task), read here when not given.
local function release_unique(uprefix, tkey, id, t)
  local ukey
  if t then ukey = t.unique else ukey = redis.call('HGET', tkey, 'unique') end
  if ukey and ukey ~= '' then
    local lock = uprefix .. ukey
    if redis.call('GET', lock) == id then
      redis.call('DEL', lock)
    end
  end
end

local function set_of(tkey, t)
  if t then return t.set, t.idx end
  local f = redis.call('HMGET', tkey, 'set', 'idx')
  return f[1], f[2]
end

-- A TaskSet item (its hash names the set's key in 'set' and its index in 'idx'): record
-- that it started (running = true) or stopped running (a retry waits, or it ended).
local function set_running(tkey, running, t)
  local set, idx = set_of(tkey, t)
  if not set then return end
  if running then
    redis.call('SADD', set .. ':run', idx)
  else
    redis.call('SREM', set .. ':run', idx)
  end
end

-- A TaskSet item ended: its index joins the set's done or failed indexes (a SET: counting
-- an item twice is impossible), with its result or (for the first few) its error.
local function set_ended(tkey, state, value, t)
  local set, idx = set_of(tkey, t)
  if not set then return end
  redis.call('SREM', set .. ':run', idx)
  if state == 'succeeded' then
    redis.call('SADD', set .. ':done', idx)
    if value ~= 'null' then redis.call('HSET', set .. ':results', idx, value) end
  elseif state ~= 'cancelled' then
    redis.call('SADD', set .. ':failed', idx)
    if redis.call('HLEN', set .. ':errors') < 10 then
      redis.call('HSETNX', set .. ':errors', idx, value)
    end
  end
end

-- The history entry of the attempt a worker holds (t: read_task, before the state
-- changes): field 'a:<n>' = '<worker>|<started ms>|<finished ms>|<outcome>|<error type>',
-- plain text so that no script decodes JSON; queue/inspector.py reads it. Returns the
-- field, its value and n.
local function attempt_entry(t, now, outcome, error_type)
  local n = tonumber(t.attempts) or 0
  return 'a:' .. n, (t.worker or '') .. '|' .. (t.started_at or '') .. '|' ..
    string.format('%d', now) .. '|' .. outcome .. '|' .. (error_type or ''), n
end

-- Drop the entry that fell out of the last HISTORY attempts.
local function trim_history(tkey, n)
  if n > HISTORY then redis.call('HDEL', tkey, 'a:' .. (n - HISTORY)) end
end

-- Record the end of the attempt a worker holds (call before the state changes).
local function record_attempt(tkey, now, outcome, error_type, t)
  local field, value, n = attempt_entry(t or read_task(tkey), now, outcome, error_type)
  redis.call('HSET', tkey, field, value)
  trim_history(tkey, n)
end

-- Move a task to a terminal state: record it, free its unique key, keep the record for
-- `retention` seconds so results and errors can still be read. `t`: its fields
-- (read_task), read here when not given; `outcome` (and `error_type`): also record the end
-- of the attempt the worker held, in the same write.
local function finish(tkey, uprefix, id, state, now, retention, field, value, t, outcome,
                      error_type)
  t = t or read_task(tkey)
  if outcome then
    local afield, avalue, n = attempt_entry(t, now, outcome, error_type)
    redis.call('HSET', tkey, 'state', state, 'finished_at', now, field, value, afield, avalue)
    trim_history(tkey, n)
  else
    redis.call('HSET', tkey, 'state', state, 'finished_at', now, field, value)
  end
  set_ended(tkey, state, value, t)
  release_unique(uprefix, tkey, id, t)
  if tonumber(retention) > 0 then
    redis.call('EXPIRE', tkey, retention)
  end
end

-- One command over a list of arguments, in chunks of CHUNK: e.g. ZADD key s1 m1 s2 m2 ...
-- (`step` arguments per item, kept together).
local function each_chunk(cmd, key, list, step)
  for i = 1, #list, CHUNK * step do
    redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK * step - 1, #list)))
  end
end

-- Wake idle workers: push up to `count` tokens. The list is cut back to `cap` tokens once it
-- holds more than twice that (nobody takes them while every worker is busy, or there is
-- none): one LTRIM per `cap` pushes, not one per push, since each call a script makes costs
-- the server more than the command itself.
local function wake(notify, count, cap)
  local n = math.min(count, cap)
  if n > 0 then
    local tokens = {}
    for i = 1, n do tokens[i] = '1' end
    if redis.call('RPUSH', notify, unpack(tokens)) > 2 * cap then
      redis.call('LTRIM', notify, -cap, -1)
    end
  end
end

-- Seconds finished records are kept: the queue's own setting (its Queue resource), else
-- the broker's default.
local function retention_of(config, default)
  return tonumber(redis.call('HGET', config, 'retention')) or tonumber(default)
end

local function error_json(kind, message)
  return cjson.encode({type = kind, message = message})
end

-- lib.lua: helpers prepended to every transition script (not a transition itself).
-- Task hashes live at <task prefix><id>; unique locks at <unique prefix><key>.

-- Release the unique lock of a task, but only while this task still holds it.
local function release_unique(uprefix, tkey, id)
  local ukey = redis.call('HGET', tkey, 'unique')
  if ukey and ukey ~= '' then
    local lock = uprefix .. ukey
    if redis.call('GET', lock) == id then
      redis.call('DEL', lock)
    end
  end
end

-- Move a task to a terminal state: record it, free its unique key, keep the record for
-- `retention` seconds so results and errors can still be read.
local function finish(tkey, uprefix, id, state, now, retention, field, value)
  redis.call('HSET', tkey, 'state', state, 'finished_at', now, field, value)
  release_unique(uprefix, tkey, id)
  if tonumber(retention) > 0 then
    redis.call('EXPIRE', tkey, retention)
  end
end

-- Wake idle workers: push up to `count` tokens, keep at most `cap` in the list.
local function wake(notify, count, cap)
  local n = math.min(count, cap)
  if n > 0 then
    local tokens = {}
    for i = 1, n do tokens[i] = '1' end
    redis.call('RPUSH', notify, unpack(tokens))
    redis.call('LTRIM', notify, -cap, -1)
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

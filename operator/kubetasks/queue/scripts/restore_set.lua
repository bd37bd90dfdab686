-- restore_set: a TaskSet's bookkeeping after Redis lost it (a FLUSHALL, a server restarted
-- empty): the indexes its status recorded as ended go back into the done and failed sets,
-- and the cursor restarts at 0 so that every other item is enqueued again (ids already
-- present are skipped by enqueue_items).
-- KEYS[1] set hash  KEYS[2] done  KEYS[3] failed
-- ARGV[1] total  ARGV[2] set name  ARGV[3] number of done indexes  ARGV[4..] done indexes,
-- then failed indexes
-- Returns 0 when the set hash was there (nothing changed), 1 when it was written (also for
-- a set that starts: nothing recorded yet).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'name', ARGV[2], 'next', 0)
-- only then may ended indexes lie at or beyond the cursor (the controller skips them)
if #ARGV > 3 then redis.call('HSET', KEYS[1], 'restored', 1) end
local ndone = tonumber(ARGV[3])
local batch = {}
local function flush(key)
  if #batch > 0 then redis.call('SADD', key, unpack(batch)) end
  batch = {}
end
for i = 4, 3 + ndone do
  batch[#batch + 1] = ARGV[i]
  if #batch >= 1000 then flush(KEYS[2]) end
end
flush(KEYS[2])
for i = 4 + ndone, #ARGV do
  batch[#batch + 1] = ARGV[i]
  if #batch >= 1000 then flush(KEYS[3]) end
end
flush(KEYS[3])
return 1

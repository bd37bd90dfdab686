-- item_progress: a running TaskSet item reported progress (ctx.progress): its fraction goes
-- into its set's progress hash (<set key>:progress, index -> fraction), which the operator
-- reads for the set's aggregate status.progress. Nothing of it reaches the API server.
-- KEYS[1] the item's task hash
-- ARGV[1] worker id  ARGV[2] attempt  ARGV[3] fraction (0..1)
-- Recorded only while that worker holds that attempt's lease (as an ack counts), so a late
-- report never follows the item's end or another worker's attempt. Returns 1 if recorded,
-- 0 if not (the task is no set item, or the attempt is no longer its worker's).
local t = read_task(KEYS[1])
if t.state ~= 'active' or t.worker ~= ARGV[1] or t.attempts ~= ARGV[2] or not t.set then
  return 0
end
redis.call('HSET', t.set .. ':progress', t.idx, ARGV[3])
return 1

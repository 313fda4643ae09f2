#!lua
--[[ Bring one layout's time index in step with its index: enter the given events that
are in the index, remove the given entries whose event has left it. Used by
consumer_service/storage/time_backfill.py, a chunk per call; checking the index inside
the script makes each change atomic with the store script's own writes, so the worker
and the read API may run meanwhile.

KEYS   [1] the index (P:index)  [2] the time index (P:time); on a Redis Cluster both of
       one partition, so in one hash slot
ARGV   [1] n_add: how many (score, eventId) pairs follow
       then n_add pairs: an event's time score (storage/timeindex.py) and its eventId,
         entered in the time index if the event is in the index
       then eventIds: removed from the time index if the event is not in the index

Result: {entered, removed}
--]]

local index, time = KEYS[1], KEYS[2]
local n_add = tonumber(ARGV[1])
local entered, removed = 0, 0
for a = 2, 2 * n_add, 2 do
  local id = ARGV[a + 1]
  if redis.call('ZSCORE', index, id) then
    entered = entered + redis.call('ZADD', time, ARGV[a], id)
  end
end
for r = 2 * n_add + 2, #ARGV do
  local id = ARGV[r]
  if not redis.call('ZSCORE', index, id) then
    removed = removed + redis.call('ZREM', time, id)
  end
end
return {entered, removed}

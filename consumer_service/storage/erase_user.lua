--[[ Erase one user's stored events under one prefix: a single node's, or one Redis
Cluster partition's tag (keys.py's layout). Each call erases at most ARGV[3] of them,
oldest first, so Redis keeps answering others while a user with many events goes; the
caller repeats until none is left.

For each event of the user's index P:user:<userId>: its body P:event:<eventId>, its entry
in P:index, in the time index P:time and in its type's index P:type:<eventType>, then its
entry in the user's index. P:index and P:time stay in step, as the read API's time
window relies on. The seen marks stay (and, on a cluster, the eventId claims): they hold an eventId
and a Kafka position, no personal data, and while they live a redelivery or replay of an
erased event is answered as a duplicate instead of being stored again. The counters
(`processed`, `type:<eventType>`) count what was ever processed, as after retention.

KEYS layout
  none on a single node; on a Redis Cluster one key, P:seq, which routes the call to
  the node owning P's slot

ARGV layout
  [1] prefix   P
  [2] userId
  [3] limit    most events erased by this call (> 0)
  [4] datakey  optional: the user's payload data key (keys.py), deleted first, so the
               user's encrypted payloads anywhere are unreadable from this call on
  [5] erasures with [4]: the data-key erasure counter, incremented when [4] existed

Result: {erased, left}: event bodies deleted by this call (an index entry whose body
retention already removed counts 0), and entries still in the user's index.
--]]

local prefix, user, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
if ARGV[4] and redis.call('DEL', ARGV[4]) == 1 then
  redis.call('INCR', ARGV[5])
end
local by_user = prefix .. ':user:' .. user
local index = prefix .. ':index'
local time_index = prefix .. ':time'
local ids = redis.call('ZRANGE', by_user, 0, limit - 1)
local erased = 0
for _, id in ipairs(ids) do
  local event_key = prefix .. ':event:' .. id
  local body = redis.call('GET', event_key)
  if body then
    local ok, event = pcall(cjson.decode, body)
    if ok and type(event) == 'table' and event['eventType'] ~= nil then
      redis.call('ZREM', prefix .. ':type:' .. tostring(event['eventType']), id)
    end
    erased = erased + redis.call('DEL', event_key)
  end
  redis.call('ZREM', index, id)
  redis.call('ZREM', time_index, id)
end
if #ids > 0 then
  redis.call('ZREM', by_user, unpack(ids))
end
return {erased, redis.call('ZCARD', by_user)}

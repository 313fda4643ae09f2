--[[ Erase one user's stored events under one prefix: a single node's, or one Redis
Cluster partition's tag (keys.py's layout), and record the erasure there, in the same
call. Each call looks at most ARGV[3] entries of the user's index, oldest first, so
Redis keeps answering others while a user with many events goes; the caller repeats
until the walk is done.

The record. P:erased:<userId> holds a time in ms since the epoch, the cutoff: the store
script (store_batch.lua) drops every later copy of an event of this user whose
timestamp is at or before it, whatever its seen mark says, so no replay brings the
erased events back (docs/personal-data.md says why the timestamp decides). The first
call of an erasure takes the cutoff from Redis's clock and answers it; the caller gives
it to every further call, on every partition, so one erasure has one cutoff. A record
only moves forward: erasing a user again keeps the later cutoff. It lives ARGV[7]
seconds (at least as long as any copy of an erased event may be replayed), renewed by
each call.

The events. Those erased are the user's events with a timestamp at or before the cutoff
(their score in P:time; one missing there goes too): those the record keeps out. A later
event of the user stays, also one stored before the record (on a cluster, in a partition
the erasure reaches a few milliseconds after taking its cutoff). The first call under a
prefix takes the highest sequence number in the user's index (`upto`); the calls walk
the index up to it, each from `after` the last entry the previous one looked at, so an
erasure ends even while the user's later events keep coming.

For each event erased: its body P:event:<eventId>, its entry in P:index, in the time
index P:time and in its type's index P:type:<eventType>, then its entry in the user's
index. P:index and P:time stay in step, as the read API's time window relies on. The
seen marks stay (and, on a cluster, the eventId claims): they hold an eventId and a
Kafka position, no personal data. The counters (`processed`, `type:<eventType>`) count
what was ever processed, as after retention.

KEYS layout
  none on a single node; on a Redis Cluster one key, P:seq, which routes the call to
  the node owning P's slot

ARGV layout
  [1] prefix   P
  [2] userId
  [3] limit    most events erased by this call (> 0)
  [4] cutoff   "" on an erasure's first call (then Redis's clock decides), else the
               cutoff that call answered
  [5] upto     "" on the first call under this prefix, else the `upto` it answered
  [6] after    "" on the first call under this prefix, else the `after` it answered
  [7] ttl      seconds the erasure record lives
  [8] datakey  optional: the user's payload data key (keys.py), deleted with the record,
               so the user's encrypted payloads anywhere are unreadable from this call on
  [9] erasures with [8]: the data-key erasure counter, incremented when [8] existed

Result: {erased, left, cutoff, upto, after}: event bodies deleted by this call (an index
entry whose body retention already removed counts 0), entries of the user's index still
to look at, the cutoff recorded (ms since the epoch), `upto` and `after`.
--]]

local prefix, user, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cutoff, upto, after = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl = ARGV[7]

-- The record first: it is what makes the erasure last.
if cutoff == nil then
  local now = redis.call('TIME')
  cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
local record = prefix .. ':erased:' .. user
local earlier = tonumber(redis.call('GET', record))
if earlier ~= nil and earlier > cutoff then cutoff = earlier end
redis.call('SET', record, string.format('%d', cutoff), 'EX', ttl)
if ARGV[8] and redis.call('DEL', ARGV[8]) == 1 then
  redis.call('INCR', ARGV[9])
end

-- The events.
local by_user = prefix .. ':user:' .. user
local index = prefix .. ':index'
local time_index = prefix .. ':time'
if upto == nil then
  local last = redis.call('ZRANGE', by_user, -1, -1, 'WITHSCORES')
  upto = tonumber(last[2]) or 0
end
local from = after == nil and '-inf' or '(' .. after
local walked = redis.call('ZRANGEBYSCORE', by_user, from, upto, 'WITHSCORES', 'LIMIT', 0, limit)
local ids = {}
for k = 1, #walked, 2 do
  local score = tonumber(redis.call('ZSCORE', time_index, walked[k]))
  if score == nil or score <= cutoff then ids[#ids + 1] = walked[k] end
  after = tonumber(walked[k + 1])
end
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
if after == nil then after = 0 end
return {erased, redis.call('ZCOUNT', by_user, '(' .. after, upto), cutoff, upto, after}

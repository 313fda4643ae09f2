#!lua
--[[ Store one batch of events: dedup, body, indexes, counters, retention.

The store's key layout is described in consumer_service/storage/keys.py; the script
builds every name itself from the prefix, the same way.

`#!lua` (Redis 7 script flags, none set): the script is refused up front when Redis is
out of memory instead of failing half-way.

KEYS layout
  none on a single node; on a Redis Cluster one key, P:seq, which only routes the call
  to the node owning P's slot (and lets a node that no longer owns it refuse the call)

ARGV layout
  [1] prefix            P: every key the script touches starts with it
  [2] dedup_ttl         seconds a seen mark lives
  [3] max_events        count retention: most events kept; 0 = unbounded
  [4] max_age           age retention: seconds an event lives; 0 = off
  [5] evict_base        count retention: evictions allowed per call ...
  [6] evict_per_stored  ... plus this many per event stored by this call
  [7] writer            "" or a writer's key suffix: then this call is batch [8] of that
                          writer, whose number is kept in P:writer:<writer> once stored
  [8] batch             this batch's number (ignored without a writer)
  [9] after             0, or a batch number of the same writer: unless that batch is
                          stored, this call writes nothing and answers "FENCED"
  [10] n_dead           how many (reason, count) pairs follow
  then n_dead pairs     reason, count: dead-letter counters to add
  then events           every event, concatenated: its origin ("<partition>:<offset>"),
                          eventId, eventType, userId and time score (its timestamp in
                          ms as a decimal number, storage/timeindex.py), each a 2-byte
                          big-endian length and the bytes, then its stored form
                          (compact JSON) with a 4-byte length

One argument for the whole batch rather than five per event: the client spends less time
encoding arguments than the script spends cutting them apart, and struct.unpack cuts
one event in a single call.

Result: one integer per event, in input order, or the string FENCED (nothing written).
The names below are the ones consumer_service/storage/script.py gives them.
  > 0       STORED       stored by this call; the value is its sequence number
   0        DUPLICATE    another record with this eventId was stored before
  -1        REDELIVERED  this very record (same origin) was stored before
  -2        ERASED       its user was erased (P:erased:<userId>) at or after its time
                         score: dropped, whatever its seen mark says
  "FENCED"  FENCED       the batch `after` is not stored yet: nothing was written

Redis does not undo a script's earlier writes when a later command fails. So the seen
marks are the LAST writes of the batch: a mark means the event is fully stored, and a
script that fails half-way leaves no mark. The retry then redoes the batch, and the redo
doubles nothing: SET overwrites a body, ZADD moves each index entry to the new sequence
number. Counters come after every write that can fail on a key. A failing write raises
STORE_FAILED naming the key; the worker retries the batch and commits nothing. Retention
only tidies up after events that are already durable, so its failures are logged
(Redis's log) and skipped rather than allowed to block every later batch.

The work is done a phase at a time, so most commands serve the whole batch (one MGET of
the marks, one INCRBY for the sequence numbers, one MSET of the bodies, one ZADD per
type...) instead of one call per event and key: a Lua call into Redis costs about as
much as the write it makes.
--]]

-- The results (see above).
local DUPLICATE, REDELIVERED, ERASED, FENCED = 0, -1, -2, 'FENCED'

local prefix = ARGV[1]
local dedup_ttl = tonumber(ARGV[2])
local max_events = tonumber(ARGV[3])
local max_age = tonumber(ARGV[4])
local evict_base = tonumber(ARGV[5])
local evict_per_stored = tonumber(ARGV[6])
local writer = ARGV[7]
local batch_no = tonumber(ARGV[8])
local after = tonumber(ARGV[9])
local n_dead = tonumber(ARGV[10])
local FIRST_DEAD = 11
-- A writer's number only has to outlive the batch sent after it (milliseconds); a writer
-- that died leaves its key behind for this long.
local WRITER_TTL = 600
local stats = prefix .. ':stats'
local index = prefix .. ':index'
-- Entered and removed together with `index`, so that while the two hold as many entries
-- they hold the same events, and a reader may list a time window from it alone.
local time_index = prefix .. ':time'

-- A write the batch depends on: its failure fails the script, naming the key.
local function must(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    error({err = 'STORE_FAILED ' .. cmd .. ' ' .. key .. ': ' .. r.err})
  end
  return r
end

-- Cleanup after durable events: a failure is logged and skipped (nil).
local function tolerate(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    redis.log(redis.LOG_WARNING, 'retention skipped ' .. cmd .. ' ' .. key .. ': ' .. r.err)
    return nil
  end
  return r
end

-- Age retention: events expire by TTL in the order they were stored, so the stale
-- entries of an index are at its front. Bounded work per call. `also`: a key whose
-- entries for the same events go too (the time index, kept in step with the index).
local function prune_front(key, limit, also)
  for _ = 1, limit do
    local first = tolerate('ZRANGE', key, 0, 0)
    if not first or #first == 0 then return end
    if redis.call('EXISTS', prefix .. ':event:' .. first[1]) == 1 then return end
    if also then tolerate('ZREM', also, first[1]) end
    tolerate('ZREM', key, first[1])
  end
end

-- unpack() takes a bounded number of values: variadic commands go in chunks.
local CHUNK = 1000
local function must_each_chunk(cmd, key, values)
  for first = 1, #values, CHUNK do
    must(cmd, key, unpack(values, first, math.min(first + CHUNK - 1, #values)))
  end
end

-- MSET of key, value pairs, in chunks.
local function must_mset(pairs_)
  for first = 1, #pairs_, CHUNK do
    local last = math.min(first + CHUNK - 1, #pairs_)
    must('MSET', pairs_[first], unpack(pairs_, first + 1, last))
  end
end

-- A writer's batches may reach Redis while the one before is still running or being
-- retried; none of them writes anything until the one before it is stored, so a user's
-- events are stored in the order they were consumed.
local writer_key = prefix .. ':writer:' .. writer
if writer ~= '' and after > 0 then
  local done = tonumber(redis.call('GET', writer_key) or '0')
  if done < after then return FENCED end
end

-- 0. The events, cut out of the blob: event e is ids[e], users_of[e], ...
local ids, users_of, types_of, origins, times_of, bodies_of = {}, {}, {}, {}, {}, {}
do
  local blob = ARGV[FIRST_DEAD + 2 * n_dead]
  local cut = struct.unpack
  local pos, n, size = 1, 0, #blob
  while pos <= size do
    n = n + 1
    local ok, origin, id, etype, user, time, body, next_pos = pcall(
      cut, '>Hc0Hc0Hc0Hc0Hc0I4c0', blob, pos)
    if not ok then error({err = 'STORE_FAILED bad event at byte ' .. pos}) end
    origins[n], ids[n], types_of[n], users_of[n] = origin, id, etype, user
    times_of[n], bodies_of[n] = time, body
    pos = next_pos
  end
end

-- 1. Decide each event from its mark, in input order. An earlier copy in this same
--    batch counts as a mark (its own is not written yet).
local seen_keys = {}
for e = 1, #ids do
  seen_keys[e] = prefix .. ':seen:' .. ids[e]
end
local marks = {}
for first = 1, #seen_keys, CHUNK do
  local got = must('MGET', unpack(seen_keys, first, math.min(first + CHUNK - 1, #seen_keys)))
  for k = 1, #got do marks[first + k - 1] = got[k] end
end

-- An erased user's events up to the erasure's cutoff (erase_user.lua) are never stored
-- again. The records of the batch's distinct users, read with one MGET per chunk.
local erased_until = {} -- userId -> cutoff (ms), or false: not erased
do
  local distinct, record_keys = {}, {}
  for e = 1, #ids do
    local user = users_of[e]
    if erased_until[user] == nil then
      erased_until[user] = false
      distinct[#distinct + 1] = user
      record_keys[#record_keys + 1] = prefix .. ':erased:' .. user
    end
  end
  for first = 1, #record_keys, CHUNK do
    local got = must('MGET', unpack(record_keys, first, math.min(first + CHUNK - 1, #record_keys)))
    for k = 1, #got do
      if got[k] then erased_until[distinct[first + k - 1]] = tonumber(got[k]) end
    end
  end
end

local results = {}
local new = {}          -- the events this call stores, in input order
local batch_origin = {} -- eventId -> origin of its copy stored by this call
local duplicates, erased = 0, 0
for e = 1, #ids do
  local id, origin = ids[e], origins[e]
  local seen = marks[e] or batch_origin[id]
  local cutoff = erased_until[users_of[e]]
  if cutoff and tonumber(times_of[e]) <= cutoff then
    erased = erased + 1
    results[e] = ERASED
  elseif not seen then
    new[#new + 1] = e
    batch_origin[id] = origin
    results[e] = 0 -- the sequence number, once known
  elseif seen == origin then
    -- The very record that set the mark, read again after a crash, a rebalance or a
    -- failed script before its offset was committed. The mark is written last, so the
    -- event was fully stored: a redelivery, not a duplicate (even if retention has
    -- deleted the event since).
    results[e] = REDELIVERED
  else
    duplicates = duplicates + 1
    results[e] = DUPLICATE
  end
end
local stored = #new
local by_user, by_type, users, types = {}, {}, {}, {}

if stored > 0 then
  -- 2. Sequence numbers, in input order: one INCRBY for the batch.
  local last_seq = must('INCRBY', prefix .. ':seq', stored)
  for k, e in ipairs(new) do
    results[e] = last_seq - stored + k
  end

  -- 3. Bodies and indexes. A user's or a type's entries go in one ZADD each.
  local bodies, in_index, in_time = {}, {}, {}
  for _, e in ipairs(new) do
    local id, user, etype, seq = ids[e], users_of[e], types_of[e], results[e]
    if max_age > 0 then
      must('SET', prefix .. ':event:' .. id, bodies_of[e], 'EX', max_age)
    else
      bodies[#bodies + 1] = prefix .. ':event:' .. id
      bodies[#bodies + 1] = bodies_of[e]
    end
    in_index[#in_index + 1] = seq
    in_index[#in_index + 1] = id
    in_time[#in_time + 1] = times_of[e]
    in_time[#in_time + 1] = id
    local u = by_user[user]
    if not u then u = {}; by_user[user] = u; users[#users + 1] = user end
    u[#u + 1] = seq
    u[#u + 1] = id
    local t = by_type[etype]
    if not t then t = {}; by_type[etype] = t; types[#types + 1] = etype end
    t[#t + 1] = seq
    t[#t + 1] = id
  end
  if #bodies > 0 then must_mset(bodies) end
  must_each_chunk('ZADD', index, in_index)
  must_each_chunk('ZADD', time_index, in_time)
  for _, user in ipairs(users) do
    local ukey = prefix .. ':user:' .. user
    must_each_chunk('ZADD', ukey, by_user[user])
    if max_age > 0 then must('EXPIRE', ukey, max_age) end
  end
  for _, etype in ipairs(types) do
    must_each_chunk('ZADD', prefix .. ':type:' .. etype, by_type[etype])
  end

  -- 4. Counters, after every write that can fail on a key.
  must('HINCRBY', stats, 'processed', stored)
  for _, etype in ipairs(types) do
    must('HINCRBY', stats, 'type:' .. etype, math.floor(#by_type[etype] / 2))
  end
end
if duplicates > 0 then
  must('HINCRBY', stats, 'duplicates', duplicates)
end
if erased > 0 then
  must('HINCRBY', stats, 'erased', erased)
end

-- 5. The seen marks, last: each one says its event is fully stored. The script's
--    busiest loop, so it calls Redis directly, with the TTL as the string it came as.
local ttl_arg = ARGV[2]
for _, e in ipairs(new) do
  local r = redis.pcall('SET', seen_keys[e], origins[e], 'EX', ttl_arg)
  if type(r) == 'table' and r.err then
    error({err = 'STORE_FAILED SET ' .. seen_keys[e] .. ': ' .. r.err})
  end
end
-- Age retention: a few stale entries per event stored, from the front of its indexes.
if max_age > 0 then
  for _, user in ipairs(users) do
    prune_front(prefix .. ':user:' .. user, 2 * #by_user[user])
  end
  for _, etype in ipairs(types) do
    prune_front(prefix .. ':type:' .. etype, 2 * #by_type[etype])
  end
end

-- After the events: a batch that fails on an event is retried whole, and counting its
-- dead letters only once it got this far keeps them from being counted twice.
for d = FIRST_DEAD, FIRST_DEAD + 2 * n_dead - 1, 2 do
  local count = tonumber(ARGV[d + 1])
  must('HINCRBY', stats, 'deadLettered', count)
  must('HINCRBY', stats, 'deadLettered:' .. ARGV[d], count)
end

-- The batch is stored: the writer's next batch may go on. The number only grows (a retry
-- of an older batch whose reply was lost comes after a newer one).
if writer ~= '' then
  local done = tonumber(redis.call('GET', writer_key) or '0')
  must('SET', writer_key, math.max(done, batch_no), 'EX', WRITER_TTL)
end

if max_events > 0 then
  local excess = (tolerate('ZCARD', index) or 0) - max_events
  local budget = evict_base + evict_per_stored * stored
  if excess > budget then excess = budget end
  if excess > 0 then
    local old = tolerate('ZRANGE', index, 0, excess - 1) or {}
    for _, id in ipairs(old) do
      local ekey = prefix .. ':event:' .. id
      local body = tolerate('GET', ekey)
      if body then
        local ok, ev = pcall(cjson.decode, body)
        if ok and type(ev) == 'table' then
          -- An anonymous event (schema version 2) is indexed by its anonymousId.
          local who = ev['userId'] or ev['anonymousId']
          tolerate('ZREM', prefix .. ':user:' .. tostring(who), id)
          tolerate('ZREM', prefix .. ':type:' .. tostring(ev['eventType']), id)
        end
      end
      redis.call('DEL', ekey)
    end
    for first = 1, #old, CHUNK do
      tolerate('ZREM', time_index, unpack(old, first, math.min(first + CHUNK - 1, #old)))
    end
    tolerate('ZREMRANGEBYRANK', index, 0, excess - 1)
  end
end
if max_age > 0 then
  prune_front(index, 2 * stored + 16, time_index)
end
return results

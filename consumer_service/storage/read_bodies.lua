#!lua flags=no-writes
--[[ Read stored bodies up to a byte budget: the read API's pages, in one round trip.

KEYS   event keys (P:event:<eventId>), in the order the page wants them; on a Redis
       Cluster all of one partition, so in one hash slot
ARGV   [1] max_bytes: stop after the body that brings the total to this many bytes

Result: one entry per key read, in order: the body, or nil for an event retention has
deleted. It stops early once the budget is reached (the last entry is the body that
reached it), so the page never receives bodies it cannot use.

`no-writes`: the script only reads, so Redis runs it on a replica, and while it is out
of memory.
--]]

local left = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local body = redis.call('GET', key)
  out[i] = body -- false (nil in the reply) when there is no body
  if body then
    left = left - #body
    if left <= 0 then break end
  end
end
return out

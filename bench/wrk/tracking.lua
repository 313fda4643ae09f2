-- wrk script: POST /v1/batch (the tracking API) with BATCH track messages per request
-- (env BATCH, default 100) from 1,000 distinct users, each message as Segment's Python
-- SDK writes it (messageId, timestamp, context, integrations), with the payload of
-- batch.lua's events. The body is built once: every request republishes the same
-- messageIds, which the producer publishes again (the consumer would store them once).
OK_STATUS = 200
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local size = tonumber(os.getenv("BATCH") or "100")
local items = {}
for i = 1, size do
  items[i] = string.format(
    '{"type":"track","messageId":"5f0c8e2a-1b7d-4c3e-9a6f-%012d","userId":"user-%d",' ..
    '"anonymousId":null,"event":"PRODUCT_VIEW",' ..
    '"properties":{"productId":"sku-%d","price":19.99,"currency":"EUR"},' ..
    '"timestamp":"2026-12-04T10:00:00.123456+00:00",' ..
    '"context":{"library":{"name":"analytics-python","version":"2.4.0"}},"integrations":{}}',
    i, i % 1000, i)
end
local body = '{"batch":[' .. table.concat(items, ",") ..
  '],"sentAt":"2026-12-04T10:00:00.500000+00:00","writeKey":"bench"}'
request = function() return wrk.format(nil, "/v1/batch", nil, body) end

-- wrk script: POST /events/batch with BATCH events per request (env BATCH, default 500)
-- from 1,000 distinct users. The body is built once: the server assigns every eventId,
-- so resending it still publishes new events, and wrk's own CPU stays out of the way.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local size = tonumber(os.getenv("BATCH") or "500")
local items = {}
for i = 1, size do
  items[i] = string.format(
    '{"userId":"user-%d","eventType":"PRODUCT_VIEW","payload":{"productId":"sku-%d","price":19.99,"currency":"EUR"}}',
    i % 1000, i)
end
local body = '{"events":[' .. table.concat(items, ",") .. ']}'
request = function() return wrk.format(nil, "/events/batch", nil, body) end

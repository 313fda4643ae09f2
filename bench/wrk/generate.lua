-- wrk script: POST /events/generate, one event per request, from 1,000 distinct users,
-- so records spread over every partition as real traffic would.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"userId":"user-%d","eventType":"PRODUCT_VIEW","payload":{"productId":"sku-%d","price":19.99,"currency":"EUR"}}',
    n % 1000, n)
  return wrk.format(nil, "/events/generate", nil, body)
end
